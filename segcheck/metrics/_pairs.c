/* Byte-pair counting: the uint8 fast path of segcheck's confusion matrix.

   count_pairs(target, pred, out) -> (rows, cols)
       target, pred: C-contiguous uint8 buffers of the same length n (labels);
       out: a writable, aligned, C-contiguous int64 buffer of 256 * 256 counts.
       For every i: out[target[i] * 256 + pred[i]] += 1. Returns (rows, cols): 1 + the
       largest target and prediction value (0, 0 for empty input); cells of out outside
       [0, rows) x [0, cols) are left as they were.

   This is one bincount over a fused index, written in C so that the index only ever exists
   for STEP pixels at a time, in L1. Range checks, ignore_index and the fold to (C, C) stay in
   Python (segcheck/metrics/_counting.py), so the kernel has no semantics of its own to get
   wrong. Each input byte is read once, into a local copy that is both range-checked and
   counted, so a buffer that changes while it is counted (another thread writing it, or out
   sharing memory with an input) can give odd counts but never an index outside the tables.
   Inputs of at least LANE_MIN pixels are counted in LANES interleaved uint32 tables:
   consecutive pixels with the same pair (a region of one class, the common case in a
   segmentation map) then do not wait on each other's increment; smaller inputs use one
   table, which is cheaper to set up and fold. Tables only span the rows and columns up to
   the largest value seen so far (grown when needed), so small inputs stay cheap. The GIL is
   released while counting, so threads count in parallel. Build with -O3 (setup.py): at -O2
   GCC neither vectorises the fused-index loop nor unrolls the lanes, about 3x slower. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LANES 8
#define LANE_MIN ((Py_ssize_t)1 << 16)    /* inputs from this many pixels on use LANES tables */
#define STEP 1024                         /* pixels copied, range-checked and fused at a time (L1) */
#define FOLD_EVERY ((Py_ssize_t)1 << 30)  /* pixels per uint32 table before folding: no overflow */
#define SIDE 256

typedef struct {
    int lanes, rows, cols, stride; /* lanes tables, each spanning target < rows, pred < cols */
    Py_ssize_t lane, pending;      /* uint32 per lane; pixels counted since the last fold */
    uint32_t *counts;
} Tables;

static int max_byte(const uint8_t *a, int n) {
    uint8_t m = 0;
    for (int i = 0; i < n; i++) m = a[i] > m ? a[i] : m;
    return m;
}

/* Adds the tables into out (they are zeroed or freed after). */
static void fold(Tables *tab, int64_t *out) {
    if (!tab->pending) return;
    for (int k = 0; k < tab->lanes; k++)
        for (int r = 0; r < tab->rows; r++) {
            const uint32_t *row = tab->counts + k * tab->lane + (Py_ssize_t)r * tab->stride;
            for (int c = 0; c < tab->cols; c++) out[r * SIDE + c] += row[c];
        }
    tab->pending = 0;
}

/* Makes the tables span at least rows x cols; returns -1 when out of memory. */
static int grow(Tables *tab, int rows, int cols, int64_t *out) {
    if (rows <= tab->rows && cols <= tab->cols) return 0;
    fold(tab, out);
    free(tab->counts);
    tab->rows = rows > tab->rows ? rows : tab->rows;
    tab->cols = cols > tab->cols ? cols : tab->cols;
    tab->stride = (tab->cols + 15) & ~15;                 /* rows start on a cache line */
    tab->lane = (Py_ssize_t)tab->rows * tab->stride + 16; /* lanes do not alias in L1 */
    tab->counts = calloc(tab->lanes * tab->lane, sizeof *tab->counts);
    return tab->counts ? 0 : -1;
}

/* Counts m <= STEP pairs: fused indices first (a loop the compiler vectorises), then one
   increment per pixel, pixel j going to lane j % lanes. t, p must fit the tables. */
static void count_step(Tables *tab, const uint8_t *t, const uint8_t *p, int m) {
    uint16_t fused[STEP]; /* t * stride + p < 256 * 256 */
    const uint16_t stride = (uint16_t)tab->stride;
    int j = 0;
    for (int q = 0; q < m; q++) fused[q] = (uint16_t)(t[q] * stride + p[q]);
    if (tab->lanes == LANES)
        for (; j + LANES <= m; j += LANES)
            for (int k = 0; k < LANES; k++) tab->counts[k * tab->lane + fused[j + k]]++;
    for (; j < m; j++) tab->counts[fused[j]]++;
    tab->pending += m;
}

/* Counts n pairs into out; sets *rows, *cols (see count_pairs); returns -1 when out of memory. */
static int count(const uint8_t *t, const uint8_t *p, Py_ssize_t n, int64_t *out, int *rows, int *cols) {
    Tables tab = {.lanes = n >= LANE_MIN ? LANES : 1};
    uint8_t tc[STEP], pc[STEP];
    int status = 0;
    for (Py_ssize_t start = 0; start < n; start += STEP) {
        int m = n - start < STEP ? (int)(n - start) : STEP;
        memcpy(tc, t + start, m);
        memcpy(pc, p + start, m);
        if (grow(&tab, max_byte(tc, m) + 1, max_byte(pc, m) + 1, out)) {
            status = -1;
            break;
        }
        if (tab.pending >= FOLD_EVERY) {
            fold(&tab, out);
            memset(tab.counts, 0, tab.lanes * tab.lane * sizeof *tab.counts);
        }
        count_step(&tab, tc, pc, m);
    }
    if (status == 0) fold(&tab, out);
    free(tab.counts);
    *rows = tab.rows;
    *cols = tab.cols;
    return status;
}

/* Gets a C-contiguous buffer of obj whose items are `format` of `itemsize` bytes (int64 out:
   "l" or "q"); returns -1 with a ValueError/BufferError set otherwise. */
static int get_buffer(PyObject *obj, Py_buffer *view, int flags, const char *what, Py_ssize_t itemsize) {
    if (PyObject_GetBuffer(obj, view, flags | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    const char *f = view->format ? view->format : "B";
    int ok = view->itemsize == itemsize &&
             (itemsize == 1 ? strcmp(f, "B") == 0 : (strcmp(f, "l") == 0 || strcmp(f, "q") == 0)) &&
             (uintptr_t)view->buf % itemsize == 0;
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "count_pairs: %s must be an aligned %s buffer, got format '%s'", what,
                     itemsize == 1 ? "uint8" : "int64", f);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *count_pairs(PyObject *self, PyObject *args) {
    PyObject *t_obj, *p_obj, *out_obj, *result = NULL;
    Py_buffer t, p, out;
    if (!PyArg_ParseTuple(args, "OOO:count_pairs", &t_obj, &p_obj, &out_obj)) return NULL;
    if (get_buffer(t_obj, &t, PyBUF_SIMPLE, "target", 1) < 0) return NULL;
    if (get_buffer(p_obj, &p, PyBUF_SIMPLE, "pred", 1) < 0) goto release_t;
    if (get_buffer(out_obj, &out, PyBUF_WRITABLE, "out", 8) < 0) goto release_p;
    if (t.len != p.len) {
        PyErr_Format(PyExc_ValueError, "count_pairs: target has %zd bytes, pred %zd; they must match", t.len, p.len);
    } else if (out.len != SIDE * SIDE * (Py_ssize_t)sizeof(int64_t)) {
        PyErr_Format(PyExc_ValueError, "count_pairs: out has %zd bytes; expected 256 * 256 int64", out.len);
    } else {
        int status, rows, cols;
        Py_BEGIN_ALLOW_THREADS
        status = count(t.buf, p.buf, t.len, out.buf, &rows, &cols);
        Py_END_ALLOW_THREADS
        result = status ? PyErr_NoMemory() : Py_BuildValue("(ii)", rows, cols);
    }
    PyBuffer_Release(&out);
release_p:
    PyBuffer_Release(&p);
release_t:
    PyBuffer_Release(&t);
    return result;
}

static PyMethodDef methods[] = {
    {"count_pairs", count_pairs, METH_VARARGS,
     "count_pairs(target, pred, out) -> (rows, cols): out[target[i] * 256 + pred[i]] += 1 for uint8 "
     "buffers; out is 256 * 256 int64; rows, cols = 1 + the largest target, prediction."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_pairs", NULL, -1, methods};

PyMODINIT_FUNC PyInit__pairs(void) { return PyModule_Create(&module); }
