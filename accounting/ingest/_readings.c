/* A decoded batch's readings checked and made rows in compiled passes (issue #20).
 *
 * The compiled half of two per-reading loops of ingest's admitting thread, each kept in Python
 * as the reference and the fallback:
 * - `check`: the wire rules msgspec's types do not carry (`batch_decoder._check`: timestamp
 *   within bounds, value names from the catalogue, value_quality naming a value);
 * - `admit`: every reading's meter belongs to the gateway, no value claimed good outside its
 *   quantity's possible range (`Admission._possible`), and the batch's readings as stored rows,
 *   with their meters, timestamps and the earliest and latest of them (what the meter order
 *   and the dedup index read);
 * - `fresh_run`: the dedup index's rule (`DedupIndex.fresh`) for the leading readings it covers,
 *   each newer than all its meter's index remembers, on those columns.
 *
 * Neither decides anything the Python does not: each answers "all clear" or refuses, and on a
 * refusal the Python loop runs on the same readings and finds, names and quarantines what is
 * wrong, exactly as without this module. So a refusal costs time, never a different outcome
 * (tests/ingest/test_readings_pass.py). The readings are `batch_decoder.Reading` structs,
 * read through their slots' offsets (`bind`), the way msgspec itself reads them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

static PyTypeObject *reading_type = NULL;
static Py_ssize_t off_meter, off_ts, off_quality, off_values, off_vq;

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

static int slot_offset(PyTypeObject *type, const char *name, Py_ssize_t *out) {
    PyObject *descr = PyDict_GetItemString(type->tp_dict, name);
    if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, name);
        return -1;
    }
    PyMemberDef *m = ((PyMemberDescrObject *)descr)->d_member;
    if (m->type != T_OBJECT_EX && m->type != T_OBJECT) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", type->tp_name, name);
        return -1;
    }
    *out = m->offset;
    return 0;
}

static PyObject *bind(PyObject *module, PyObject *arg) {
    if (!PyType_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "bind() takes the Reading struct type");
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)arg;
    if (slot_offset(type, "meter", &off_meter) < 0 || slot_offset(type, "ts_ms", &off_ts) < 0 ||
        slot_offset(type, "quality", &off_quality) < 0 || slot_offset(type, "values", &off_values) < 0 ||
        slot_offset(type, "value_quality", &off_vq) < 0)
        return NULL;
    Py_INCREF(type);
    Py_XSETREF(reading_type, type);
    Py_RETURN_NONE;
}

/* The reading's five slots; 0 when it is not an exact Reading with every slot set. */
typedef struct {
    PyObject *meter, *ts, *quality, *values, *vq;
} Fields;

static inline int fields_of(PyObject *r, Fields *f) {
    if (reading_type == NULL || Py_TYPE(r) != reading_type) return 0;
    f->meter = SLOT(r, off_meter);
    f->ts = SLOT(r, off_ts);
    f->quality = SLOT(r, off_quality);
    f->values = SLOT(r, off_values);
    f->vq = SLOT(r, off_vq);
    return f->meter && f->ts && f->quality && f->values && f->vq && PyLong_CheckExact(f->ts) &&
           PyUnicode_CheckExact(f->meter) && PyDict_CheckExact(f->values) &&
           (f->vq == Py_None || PyDict_CheckExact(f->vq));
}

static inline int ts_of(PyObject *ts, long long *out) {
    int overflow = 0;
    *out = PyLong_AsLongLongAndOverflow(ts, &overflow);
    if (overflow || (*out == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

/* check(readings, lo, hi, names) -> bool: True when every reading keeps the rules; False when
 * any does not or cannot be read here (the Python `_check` then runs and decides). */
static PyObject *check(PyObject *module, PyObject *args) {
    PyObject *readings, *names;
    long long lo, hi;
    if (!PyArg_ParseTuple(args, "O!LLO!:check", &PyList_Type, &readings, &lo, &hi, &PyFrozenSet_Type, &names))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(readings);
    for (Py_ssize_t i = 0; i < n; i++) {
        Fields f;
        long long ts;
        if (!fields_of(PyList_GET_ITEM(readings, i), &f) || !ts_of(f.ts, &ts) || ts < lo || ts > hi)
            Py_RETURN_FALSE;
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (PyDict_Next(f.values, &pos, &key, &value)) {
            int in = PySet_Contains(names, key);
            if (in < 0) return NULL;
            if (!in) Py_RETURN_FALSE;
        }
        if (f.vq != Py_None) {
            pos = 0;
            while (PyDict_Next(f.vq, &pos, &key, &value)) {
                int in = PyDict_Contains(f.values, key);
                if (in < 0) return NULL;
                if (!in) Py_RETURN_FALSE;
            }
        }
    }
    Py_RETURN_TRUE;
}

/* admit(readings, meters, bounds, site, gateway, row_type) -> (rows, meters, stamps, first, last) | None
 *
 * None when a reading names a meter outside `meters`, holds a value outside its quantity's
 * `bounds` (name -> (low, high) floats; whatever its quality: the Python pass decides whether
 * that one is impossible), a value that is not a float, or cannot be read here. */
static PyObject *admit(PyObject *module, PyObject *args) {
    PyObject *readings, *allowed, *bounds, *site, *gateway;
    PyTypeObject *row_type;
    if (!PyArg_ParseTuple(args, "O!O!O!UUO!:admit", &PyList_Type, &readings, &PyFrozenSet_Type, &allowed,
                          &PyDict_Type, &bounds, &site, &gateway, &PyType_Type, &row_type))
        return NULL;
    if (!PyType_IsSubtype(row_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "row_type must be a tuple type");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(readings);
    PyObject *rows = PyList_New(n), *meters = PyList_New(n), *stamps = PyList_New(n);
    if (rows == NULL || meters == NULL || stamps == NULL) goto fail;
    long long first = 0, last = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Fields f;
        long long ts;
        if (!fields_of(PyList_GET_ITEM(readings, i), &f) || !ts_of(f.ts, &ts)) goto refuse;
        int in = PySet_Contains(allowed, f.meter);
        if (in < 0) goto fail;
        if (!in) goto refuse;
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (PyDict_Next(f.values, &pos, &key, &value)) {
            if (value == Py_None) continue;
            if (!PyFloat_CheckExact(value)) goto refuse;
            PyObject *range = PyDict_GetItemWithError(bounds, key);
            if (range == NULL) {
                if (PyErr_Occurred()) goto fail;
                goto refuse;
            }
            if (!PyTuple_CheckExact(range) || PyTuple_GET_SIZE(range) != 2 ||
                !PyFloat_CheckExact(PyTuple_GET_ITEM(range, 0)) || !PyFloat_CheckExact(PyTuple_GET_ITEM(range, 1)))
                goto refuse;
            double v = PyFloat_AS_DOUBLE(value);
            if (!(PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(range, 0)) <= v && v <= PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(range, 1))))
                goto refuse;
        }
        if (i == 0 || ts < first) first = ts;
        if (i == 0 || ts > last) last = ts;
        PyObject *row = row_type->tp_alloc(row_type, 7);
        if (row == NULL) goto fail;
        PyObject *items[7] = {site, gateway, f.meter, f.ts, f.quality, f.values, f.vq};
        for (int k = 0; k < 7; k++) {
            Py_INCREF(items[k]);
            PyTuple_SET_ITEM(row, k, items[k]);
        }
        PyList_SET_ITEM(rows, i, row);
        Py_INCREF(f.meter);
        PyList_SET_ITEM(meters, i, f.meter);
        Py_INCREF(f.ts);
        PyList_SET_ITEM(stamps, i, f.ts);
    }
    PyObject *out = Py_BuildValue("(NNNLL)", rows, meters, stamps, first, last);
    return out;  /* Py_BuildValue took the lists ("N"), or freed them on failure */
refuse:
    Py_DECREF(rows);
    Py_DECREF(meters);
    Py_DECREF(stamps);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(rows);
    Py_XDECREF(meters);
    Py_XDECREF(stamps);
    return NULL;
}

/* The dedup index's per-meter struct (`dedup._MeterIndex`), read and written through its slots. */
static PyTypeObject *index_type = NULL;
static Py_ssize_t off_order, off_head, off_newest, off_seen, off_floor;

static PyObject *bind_index(PyObject *module, PyObject *arg) {
    if (!PyType_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "bind_index() takes the dedup index's meter type");
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)arg;
    if (slot_offset(type, "order", &off_order) < 0 || slot_offset(type, "head", &off_head) < 0 ||
        slot_offset(type, "newest", &off_newest) < 0 || slot_offset(type, "seen", &off_seen) < 0 ||
        slot_offset(type, "floor", &off_floor) < 0)
        return NULL;
    Py_INCREF(type);
    Py_XSETREF(index_type, type);
    Py_RETURN_NONE;
}

static inline void set_slot(PyObject *obj, Py_ssize_t off, PyObject *value) {  /* steals `value` */
    PyObject *old = SLOT(obj, off);
    SLOT(obj, off) = value;
    Py_XDECREF(old);
}

/* fresh_run(indexes, meters, stamps, window) -> int
 *
 * The dedup index's rule (`DedupIndex.fresh`) for as many leading readings as it covers: a
 * meter with an index holding no set (`seen` None) and a reading newer than all it remembers
 * (`newest`): remember it (append, and evict the oldest beyond `window`, exactly as the Python
 * loop's inlined `evict`). Returns how many readings it remembered; the Python loop takes the
 * rest from there (a meter without an index yet, a late reading, a copy, anything unusual). */
static PyObject *fresh_run(PyObject *module, PyObject *args) {
    PyObject *indexes, *meters, *stamps;
    Py_ssize_t window;
    if (!PyArg_ParseTuple(args, "O!O!O!n:fresh_run", &PyDict_Type, &indexes, &PyList_Type, &meters,
                          &PyList_Type, &stamps, &window))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(meters);
    if (PyList_GET_SIZE(stamps) != n) {
        PyErr_SetString(PyExc_ValueError, "meters and stamps differ in length");
        return NULL;
    }
    Py_ssize_t i = 0;
    for (; i < n && index_type != NULL; i++) {
        PyObject *index = PyDict_GetItemWithError(indexes, PyList_GET_ITEM(meters, i));
        if (index == NULL) {
            if (PyErr_Occurred()) return NULL;
            break;  /* a meter met for the first time: the Python loop makes its index */
        }
        if (Py_TYPE(index) != index_type || SLOT(index, off_seen) != Py_None) break;
        PyObject *ts = PyList_GET_ITEM(stamps, i), *newest = SLOT(index, off_newest);
        PyObject *order = SLOT(index, off_order), *head_obj = SLOT(index, off_head);
        if (newest == NULL || order == NULL || head_obj == NULL || !PyLong_CheckExact(ts) ||
            !PyLong_CheckExact(newest) || !PyList_CheckExact(order) || !PyLong_CheckExact(head_obj))
            break;
        long long t, known;
        if (!ts_of(ts, &t) || !ts_of(newest, &known) || t <= known) break;
        Py_ssize_t head = PyLong_AsSsize_t(head_obj);
        if (head < 0) { PyErr_Clear(); break; }
        if (PyList_Append(order, ts) < 0) return NULL;
        Py_INCREF(ts);
        set_slot(index, off_newest, ts);
        Py_ssize_t len = PyList_GET_SIZE(order);
        if (len - head > window && head < len) {
            PyObject *floor = PyList_GET_ITEM(order, head);
            Py_INCREF(floor);
            set_slot(index, off_floor, floor);
            head += 1;
            if (head >= len / 2) {
                if (PyList_SetSlice(order, 0, head, NULL) < 0) return NULL;
                head = 0;
            }
            PyObject *h = PyLong_FromSsize_t(head);
            if (h == NULL) return NULL;
            set_slot(index, off_head, h);
        }
    }
    return PyLong_FromSsize_t(i);
}

static PyMethodDef methods[] = {
    {"bind_index", bind_index, METH_O, "bind_index(_MeterIndex) -> None: the dedup index's meter type, by its slots."},
    {"fresh_run", fresh_run, METH_VARARGS,
     "fresh_run(indexes, meters, stamps, window) -> int: readings remembered by the dedup index's rule, "
     "from the first; the Python loop takes the rest."},
    {"bind", bind, METH_O, "bind(Reading) -> None: read readings of this struct type through its slots."},
    {"check", check, METH_VARARGS,
     "check(readings, lo, hi, names) -> bool: every reading within [lo, hi] ms, its value names in names, "
     "its value_quality naming its values (False: the Python check decides)."},
    {"admit", admit, METH_VARARGS,
     "admit(readings, meters, bounds, site, gateway, row_type) -> (rows, meters, stamps, first, last) | None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "accounting.ingest._readings",
    .m_doc = "A decoded batch's readings checked and made rows in compiled passes (see accounting/ingest/admission.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__readings(void) { return PyModule_Create(&module); }
