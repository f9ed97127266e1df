/* A cycle's stored readings as columns, in one compiled pass.
 *
 * The compiled half of `accounting.ingest.reading_columns.ColumnLayout.columns` (issue #20): one
 * walk over the rows fills the meter slots, timestamps, quality codes and the value matrix that
 * the Python wrapper allocated (numpy arrays, written through the buffer protocol; no numpy
 * headers), where the Python pass walks the rows once per column. The result is the Python
 * pass's, array for array (tests/ingest/test_reading_columns.py compares the two).
 *
 * A value that is a float is taken as is, an int as its float (correctly rounded, as float()),
 * None or no value leaves the wrapper's NaN. It refuses (returns None, and the Python pass runs)
 * rather than guess: a row that is not a 7-tuple, a timestamp that is not an int or is beyond
 * int64, a values that is not a dict, a key of it that is not a str, a value of another type
 * (a bool, a str, ...), an int too large for a float, a slot or code that is not a small int.
 * Errors raised by a lookup (an unhashable meter) are raised, as the Python pass would.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* The names a values key was found to be (or not to be), by identity: msgspec hands out the same
 * key objects row after row, so after the first rows a key costs a few pointer compares. Each
 * learnt key is referenced until the call ends, so its address cannot be reused meanwhile. */
#define LEARNT_MAX 32

typedef struct {
    PyObject *names;  /* tuple of str */
    Py_ssize_t k;
    PyObject *key[LEARNT_MAX];
    Py_ssize_t col[LEARNT_MAX];  /* -1: not one of the names */
    int n;
} Names;

/* The column of `key` (an exact str), -1 if it is none of the names; -2 on error. */
static Py_ssize_t name_column(Names *m, PyObject *key) {
    for (int j = 0; j < m->n; j++)
        if (m->key[j] == key) return m->col[j];
    Py_ssize_t col = -1;
    for (Py_ssize_t c = 0; c < m->k; c++) {
        PyObject *name = PyTuple_GET_ITEM(m->names, c);
        if (name == key) { col = c; break; }
        if (PyUnicode_GET_LENGTH(name) != PyUnicode_GET_LENGTH(key)) continue;
        int eq = PyUnicode_Compare(name, key);
        if (eq == -1 && PyErr_Occurred()) return -2;
        if (eq == 0) { col = c; break; }
    }
    if (m->n < LEARNT_MAX) {
        Py_INCREF(key);
        m->key[m->n] = key;
        m->col[m->n] = col;
        m->n++;
    }
    return col;
}

static void names_release(Names *m) {
    for (int j = 0; j < m->n; j++) Py_DECREF(m->key[j]);
    m->n = 0;
}

/* A writable C-contiguous buffer of `ndim` dimensions, shape (n[, k]), items of `size` bytes
 * whose struct format (after an optional native-order prefix) is one of `formats`. */
static int get_array(PyObject *obj, Py_buffer *view, const char *arg, const char *what, const char *formats,
                     Py_ssize_t size, int ndim, Py_ssize_t n, Py_ssize_t k) {
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        int type_error = PyErr_ExceptionMatches(PyExc_TypeError);
        PyErr_Clear();
        PyErr_Format(type_error ? PyExc_TypeError : PyExc_ValueError,
                     "%s must be a writable C-contiguous %s array", arg, what);
        return -1;
    }
    const char *f = view->format != NULL ? view->format : "B";
    if (*f == '@' || *f == '=') f++;
#if PY_LITTLE_ENDIAN
    else if (*f == '<') f++;
#else
    else if (*f == '>' || *f == '!') f++;
#endif
    int ok = view->itemsize == size && f[0] != '\0' && f[1] == '\0' && strchr(formats, f[0]) != NULL;
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "%s must be a %s array, not format '%s' of %zd bytes", arg, what,
                     view->format != NULL ? view->format : "B", view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    if (view->ndim != ndim || view->shape == NULL || view->shape[0] != n || (ndim == 2 && view->shape[1] != k)) {
        if (ndim == 1)
            PyErr_Format(PyExc_ValueError, "%s must have shape (%zd,)", arg, n);
        else
            PyErr_Format(PyExc_ValueError, "%s must have shape (%zd, %zd)", arg, n, k);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* A dict's value for `key` as a small int (a slot, a code): 0 and `*out` set, 1 when the key is
 * absent (`*out` = -1), 2 when the value is not an int within [lo, hi], -1 on error. */
static int small_int(PyObject *dict, PyObject *key, long lo, long hi, long *out) {
    PyObject *v = PyDict_GetItemWithError(dict, key);  /* borrowed */
    if (v == NULL) {
        if (PyErr_Occurred()) return -1;
        *out = -1;
        return 1;
    }
    if (!PyLong_CheckExact(v)) return 2;
    int overflow = 0;
    long x = PyLong_AsLongAndOverflow(v, &overflow);
    if (overflow || (x == -1 && PyErr_Occurred())) { PyErr_Clear(); return 2; }
    if (x < lo || x > hi) return 2;
    *out = x;
    return 0;
}

static PyObject *fill(PyObject *module, PyObject *args) {
    PyObject *rows_in, *slot, *quality_code, *names, *meter_obj, *ts_obj, *code_obj, *values_obj;
    if (!PyArg_ParseTuple(args, "OO!O!O!OOOO:fill", &rows_in, &PyDict_Type, &slot, &PyDict_Type, &quality_code,
                          &PyTuple_Type, &names, &meter_obj, &ts_obj, &code_obj, &values_obj))
        return NULL;
    Py_ssize_t k = PyTuple_GET_SIZE(names);
    for (Py_ssize_t c = 0; c < k; c++) {
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(names, c))) {
            PyErr_SetString(PyExc_TypeError, "names must be a tuple of str");
            return NULL;
        }
    }
    PyObject *rows = PySequence_Fast(rows_in, "rows must be a sequence");
    if (rows == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(rows);
    Py_buffer meter_view, ts_view, code_view, values_view;
    int got = 0;  /* how many views are held */
    PyObject *result = NULL;
    Names m = {names, k, {NULL}, {0}, 0};
    if (get_array(meter_obj, &meter_view, "meter", "int64", "lq", 8, 1, n, 0) < 0) goto done;
    got = 1;
    if (get_array(ts_obj, &ts_view, "ts", "int64", "lq", 8, 1, n, 0) < 0) goto done;
    got = 2;
    if (get_array(code_obj, &code_view, "code", "int8", "b", 1, 1, n, 0) < 0) goto done;
    got = 3;
    if (get_array(values_obj, &values_view, "values", "float64", "d", 8, 2, n, k) < 0) goto done;
    got = 4;
    int64_t *meter = meter_view.buf, *ts = ts_view.buf;
    int8_t *code = code_view.buf;
    double *values = values_view.buf;
    int any_vq = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        /* The lookups below may run Python code (a meter's __eq__) that changes a list of rows. */
        if (PySequence_Fast_GET_SIZE(rows) != n) {
            PyErr_SetString(PyExc_RuntimeError, "rows changed size during fill");
            goto done;
        }
        PyObject *row = PySequence_Fast_GET_ITEM(rows, i);
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != 7) goto refuse;
        Py_INCREF(row);
        PyObject *t = PyTuple_GET_ITEM(row, 3);
        PyObject *vals = PyTuple_GET_ITEM(row, 5);
        PyObject *vq = PyTuple_GET_ITEM(row, 6);
        if (!PyLong_CheckExact(t) || !PyDict_Check(vals)) { Py_DECREF(row); goto refuse; }
        int overflow = 0;
        long long ts_ms = PyLong_AsLongLongAndOverflow(t, &overflow);
        if (overflow || (ts_ms == -1 && PyErr_Occurred())) { PyErr_Clear(); Py_DECREF(row); goto refuse; }
        long s, q;
        int rc = small_int(slot, PyTuple_GET_ITEM(row, 2), LONG_MIN, LONG_MAX, &s);
        if (rc == 0 || rc == 1) rc = small_int(quality_code, PyTuple_GET_ITEM(row, 4), INT8_MIN, INT8_MAX, &q);
        if (rc == 0 || rc == 1) {
            if (vq != Py_None && !any_vq) {
                int truth = PyObject_IsTrue(vq);
                if (truth < 0) rc = -1;
                else any_vq = truth;
            }
        }
        if (rc < 0) { Py_DECREF(row); goto done; }
        if (rc == 2) { Py_DECREF(row); goto refuse; }
        meter[i] = (int64_t)s;
        ts[i] = (int64_t)ts_ms;
        code[i] = (int8_t)q;
        /* No Python code runs from here to the row's end: the dict cannot change under PyDict_Next. */
        double *out = values + i * k;
        Py_ssize_t pos = 0;
        PyObject *key, *v;
        while (PyDict_Next(vals, &pos, &key, &v)) {
            if (!PyUnicode_CheckExact(key)) { Py_DECREF(row); goto refuse; }
            Py_ssize_t col = name_column(&m, key);
            if (col == -2) { Py_DECREF(row); goto done; }
            if (col < 0 || v == Py_None) continue;
            if (PyFloat_Check(v)) {
                out[col] = PyFloat_AS_DOUBLE(v);
            } else if (PyLong_CheckExact(v)) {
                double d = PyLong_AsDouble(v);
                if (d == -1.0 && PyErr_Occurred()) { PyErr_Clear(); Py_DECREF(row); goto refuse; }
                out[col] = d;
            } else {
                Py_DECREF(row);
                goto refuse;  /* a bool, a str, ...: what numpy makes of it is the Python pass's to say */
            }
        }
        Py_DECREF(row);
    }
    result = PyBool_FromLong(any_vq);
    goto done;
refuse:
    result = Py_None;
    Py_INCREF(result);
done:
    names_release(&m);
    if (got >= 4) PyBuffer_Release(&values_view);
    if (got >= 3) PyBuffer_Release(&code_view);
    if (got >= 2) PyBuffer_Release(&ts_view);
    if (got >= 1) PyBuffer_Release(&meter_view);
    Py_DECREF(rows);
    return result;
}

static PyMethodDef methods[] = {
    {"fill", fill, METH_VARARGS,
     "fill(rows, slot, quality_code, names, meter, ts, code, values) -> bool | None\n\n"
     "Write the rows (StoredReading 7-tuples) into the given arrays: meter (int64[n], slot[meter] "
     "or -1), ts (int64[n]), code (int8[n], quality_code[quality] or -1) and values (float64[n, "
     "len(names)], C order, NaN-filled by the caller: each named value that is a number). Returns "
     "whether any row has a value_quality that is true, or None when a row is outside what this "
     "pass covers (the arrays are then partly written; the caller's Python pass runs)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "accounting.ingest._columns",
    .m_doc = "Stored readings as columns in one compiled pass (see accounting/ingest/reading_columns.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__columns(void) { return PyModule_Create(&module); }
