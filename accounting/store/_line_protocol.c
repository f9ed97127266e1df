/* A cycle's readings as line-protocol request bodies, in one compiled pass.
 *
 * The compiled half of `accounting.store.influx.reading_chunks` (issue #20): the Python there
 * encodes every reading's values with msgspec as one JSON array (`blob`), and this pass cuts
 * that array into field sets and writes each line, `<prefix><fields>,quality="q" <ts_ms>`,
 * straight into the request bodies: no bytes object, tuple or `%` per reading. The numbers'
 * digits are msgspec's, copied, so the output is byte for byte what the Python pass writes
 * (tests/ingest/test_line_protocol.py compares the two on every shape of reading).
 *
 * It refuses (returns None, and the Python pass runs) rather than guess: a meter whose prefix is
 * not cached yet, a row that is not a 7-tuple, a timestamp that is not an int, a value name
 * outside [A-Za-z0-9_], or a blob whose shape is not the one msgspec writes for a list of
 * flat dicts of numbers. A reading the fast format does not cover (a null value, no values,
 * per-value quality, a quality outside the codes) gets its field set from `general(quality,
 * values, value_quality)`, the Python pass's own `_general_fields`, as there.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buffer;

static int buf_reserve(Buffer *b, Py_ssize_t more) {
    if (b->len + more <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more) cap *= 2;
    char *p = PyMem_Realloc(b->data, (size_t)cap);
    if (p == NULL) { PyErr_NoMemory(); return -1; }
    b->data = p;
    b->cap = cap;
    return 0;
}

static int buf_put(Buffer *b, const char *s, Py_ssize_t n) {
    if (buf_reserve(b, n) < 0) return -1;
    memcpy(b->data + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

static int buf_put_bytes(Buffer *b, PyObject *bytes) {
    return buf_put(b, PyBytes_AS_STRING(bytes), PyBytes_GET_SIZE(bytes));
}

static int buf_put_int(Buffer *b, long long v) {
    char tmp[24];
    int n = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do { tmp[n++] = (char)('0' + u % 10); u /= 10; } while (u);
    if (v < 0) tmp[n++] = '-';
    if (buf_reserve(b, n) < 0) return -1;
    for (int i = n - 1; i >= 0; i--) b->data[b->len++] = tmp[i];
    return 0;
}

static inline int name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static inline int number_char(char c) {
    return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

/* One reading's `{"a":1.5,"b":2}` in the blob, at `*at`, written to `b` as `a=1.5,b=2` in the
 * same pass; `*at` then points past its `}`. Returns 1 when written, 0 when the fast format does
 * not cover it (a null value, no values: the caller drops what was written and asks `general`),
 * -1 when the bytes are not msgspec's shape for a flat dict of numbers. */
static int put_values(Buffer *b, const char *s, Py_ssize_t n, Py_ssize_t *at) {
    Py_ssize_t i = *at;
    if (i >= n || s[i] != '{') return -1;
    i++;
    int plain = 1;
    if (i < n && s[i] == '}') {
        *at = i + 1;
        return 0;  /* no values */
    }
    /* The fields are never longer than the JSON they come from. */
    const char *close = memchr(s + i, '}', (size_t)(n - i));
    if (close == NULL) return -1;
    if (buf_reserve(b, close - (s + i)) < 0) return -2;
    char *out = b->data + b->len;
    Py_ssize_t k = 0;
    for (;;) {
        if (i >= n || s[i] != '"') return -1;
        i++;
        while (i < n && name_char(s[i])) out[k++] = s[i++];
        if (i >= n || s[i] != '"' || s[i - 1] == '"') return -1;
        i++;
        if (i >= n || s[i] != ':') return -1;
        i++;
        out[k++] = '=';
        if (i + 4 <= n && memcmp(s + i, "null", 4) == 0) {
            plain = 0;
            i += 4;
        } else {
            Py_ssize_t num = i;
            while (i < n && number_char(s[i])) out[k++] = s[i++];
            if (i == num) return -1;
        }
        if (i >= n) return -1;
        if (s[i] == ',') { out[k++] = ','; i++; continue; }
        if (s[i] == '}') break;
        return -1;
    }
    if (s + i != close) return -1;
    *at = i + 1;
    if (plain) b->len += k;
    return plain;
}

/* The cache's meter → prefix dict of a (site, gateway), remembered across consecutive rows of
 * the same gateway's batch (the same two str objects): one dict lookup a row instead of three. */
typedef struct {
    PyObject *site, *gateway, *meters;  /* borrowed: alive as long as the rows and the cache */
} Last;

static PyObject *lookup3(PyObject *prefixes, Last *last, PyObject *site, PyObject *gateway, PyObject *meter) {
    if (site != last->site || gateway != last->gateway || last->meters == NULL) {
        last->site = last->gateway = last->meters = NULL;
        PyObject *g = PyDict_GetItemWithError(prefixes, site);
        if (g == NULL || !PyDict_Check(g)) return NULL;
        PyObject *m = PyDict_GetItemWithError(g, gateway);
        if (m == NULL || !PyDict_Check(m)) return NULL;
        last->site = site;
        last->gateway = gateway;
        last->meters = m;
    }
    PyObject *p = PyDict_GetItemWithError(last->meters, meter);
    if (p == NULL || !PyBytes_CheckExact(p)) return NULL;
    return p;
}

static PyObject *bodies(PyObject *module, PyObject *args) {
    PyObject *rows_in, *blob, *prefixes, *quality_fields, *general;
    Py_ssize_t per_chunk;
    if (!PyArg_ParseTuple(args, "OSO!O!nO:bodies", &rows_in, &blob, &PyDict_Type, &prefixes,
                          &PyDict_Type, &quality_fields, &per_chunk, &general))
        return NULL;
    if (per_chunk < 1) {
        PyErr_SetString(PyExc_ValueError, "per_chunk must be at least 1");
        return NULL;
    }
    PyObject *rows = PySequence_Fast(rows_in, "rows must be a sequence");
    if (rows == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(rows);
    PyObject **items = PySequence_Fast_ITEMS(rows);
    const char *s = PyBytes_AS_STRING(blob);
    Py_ssize_t slen = PyBytes_GET_SIZE(blob);
    Py_ssize_t at = 1;
    Buffer b = {NULL, 0, 0};
    Last last = {NULL, NULL, NULL};
    PyObject *out = PyList_New(0);
    if (out == NULL) goto fail;
    if (slen < 2 || s[0] != '[' || s[slen - 1] != ']') goto refuse;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = items[i];
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != 7) goto refuse;
        PyObject *ts = PyTuple_GET_ITEM(row, 3);
        if (!PyLong_CheckExact(ts)) goto refuse;
        int overflow = 0;
        long long ts_ms = PyLong_AsLongLongAndOverflow(ts, &overflow);
        if (overflow || (ts_ms == -1 && PyErr_Occurred())) { PyErr_Clear(); goto refuse; }
        PyObject *prefix = lookup3(prefixes, &last, PyTuple_GET_ITEM(row, 0), PyTuple_GET_ITEM(row, 1),
                                   PyTuple_GET_ITEM(row, 2));
        if (prefix == NULL) {
            if (PyErr_Occurred()) goto fail;
            goto refuse;  /* a meter not seen yet: the Python pass caches its prefix */
        }
        if (i > 0) {  /* msgspec separates the dicts by one comma */
            if (at >= slen || s[at] != ',') goto refuse;
            at++;
        }
        PyObject *quality = PyTuple_GET_ITEM(row, 4);
        PyObject *vq = PyTuple_GET_ITEM(row, 6);
        PyObject *qfield = PyDict_GetItemWithError(quality_fields, quality);
        if (qfield == NULL && PyErr_Occurred()) goto fail;
        int has_vq = vq != Py_None && PyObject_IsTrue(vq);
        if (has_vq < 0) goto fail;
        if (i % per_chunk == 0 && i > 0) {
            PyObject *body = PyBytes_FromStringAndSize(b.data, b.len);
            if (body == NULL || PyList_Append(out, body) < 0) { Py_XDECREF(body); goto fail; }
            Py_DECREF(body);
            b.len = 0;
        } else if (i > 0 && buf_put(&b, "\n", 1) < 0) {
            goto fail;
        }
        if (buf_put_bytes(&b, prefix) < 0) goto fail;
        Py_ssize_t mark = b.len;
        int plain = put_values(&b, s, slen, &at);
        if (plain == -2) goto fail;
        if (plain < 0) goto refuse;
        if (plain && !has_vq && qfield != NULL && PyBytes_CheckExact(qfield)) {
            if (buf_put_bytes(&b, qfield) < 0) goto fail;
        } else {
            b.len = mark;  /* whatever put_values wrote: this reading takes the general format */
            PyObject *f = PyObject_CallFunctionObjArgs(general, quality, PyTuple_GET_ITEM(row, 5), vq, NULL);
            if (f == NULL) goto fail;
            if (!PyBytes_Check(f)) {
                Py_DECREF(f);
                PyErr_SetString(PyExc_TypeError, "general() must return bytes");
                goto fail;
            }
            int rc = buf_put_bytes(&b, f);
            Py_DECREF(f);
            last.meters = NULL;  /* Python code ran: look the cache up afresh */
            if (rc < 0 || buf_put(&b, " ", 1) < 0) goto fail;
        }
        if (buf_put_int(&b, ts_ms) < 0) goto fail;
    }
    if (at != slen - 1) goto refuse;  /* the blob holds more (or fewer) readings than rows */
    if (n > 0) {
        PyObject *body = PyBytes_FromStringAndSize(b.data, b.len);
        if (body == NULL || PyList_Append(out, body) < 0) { Py_XDECREF(body); goto fail; }
        Py_DECREF(body);
    }
    PyMem_Free(b.data);
    Py_DECREF(rows);
    return out;
refuse:
    PyMem_Free(b.data);
    Py_DECREF(rows);
    Py_XDECREF(out);
    Py_RETURN_NONE;
fail:
    PyMem_Free(b.data);
    Py_DECREF(rows);
    Py_XDECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"bodies", bodies, METH_VARARGS,
     "bodies(rows, blob, prefixes, quality_fields, per_chunk, general) -> list[bytes] | None\n\n"
     "The rows as line-protocol request bodies of at most per_chunk lines, their values' digits "
     "taken from blob (msgspec's JSON of the rows' values dicts, as one list); None when any row "
     "or the blob is outside what this pass covers (the caller's Python pass then runs)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "accounting.store._line_protocol",
    .m_doc = "Line protocol for a cycle's readings in one compiled pass (see accounting/store/influx.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__line_protocol(void) { return PyModule_Create(&module); }
