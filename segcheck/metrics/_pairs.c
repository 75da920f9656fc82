/* Byte-pair counting: the uint8 fast path of segcheck's confusion matrix.

   count_pairs(target, pred, out)
       target, pred: C-contiguous buffers of the same length n (uint8 labels);
       out: a writable C-contiguous buffer of 256 * 256 int64 counts.
       For every i: out[target[i] * 256 + pred[i]] += 1. Returns (rows, cols): 1 + the
       largest target and prediction value (0, 0 for empty input); cells of out outside
       [0, rows) x [0, cols) are left as they were.

   This is one bincount over a fused index, written in C so that the index only ever exists
   for STEP pixels at a time, in L1. Range checks, ignore_index and the fold to
   (C, C) stay in Python (segcheck/metrics/_counting.py), so the kernel has no semantics of
   its own to get wrong. Inputs of at least BLOCK pixels are counted in LANES interleaved
   uint32 tables: consecutive pixels with the same pair (a region of one class, the common
   case in a segmentation map) then do not wait on each other's increment; smaller inputs
   use one table, which is cheaper to set up and fold. Each table only spans the rows and columns up to
   the largest value seen so far (checked per block, grown when needed), so small inputs
   stay cheap. The GIL is released while counting, so threads count in parallel. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LANES 8
#define BLOCK ((Py_ssize_t)1 << 16)   /* pixels per range check: both inputs stay in L2 */
#define FOLD_EVERY ((Py_ssize_t)1 << 31)  /* pixels per uint32 table before folding: no overflow */
#define STEP 1024                 /* pixels per fused-index buffer (2 KiB, in L1) */
#define SIDE 256

typedef struct {
    int lanes, rows, cols, stride; /* lanes tables, each spanning target < rows, pred < cols */
    Py_ssize_t lane, pending; /* uint32 per lane; pixels counted since the last fold */
    uint32_t *counts;
} Tables;

static int max_byte(const uint8_t *a, Py_ssize_t n) {
    uint8_t m = 0;
    for (Py_ssize_t i = 0; i < n; i++) m = a[i] > m ? a[i] : m;
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
    tab->stride = (tab->cols + 15) & ~15;              /* rows start on a cache line */
    tab->lane = (Py_ssize_t)tab->rows * tab->stride + 16; /* lanes do not alias in L1 */
    tab->counts = calloc(tab->lanes * tab->lane, sizeof *tab->counts);
    return tab->counts ? 0 : -1;
}

/* Adds the pairs of one block to the tables: fused indices for STEP pixels at a time (a loop
   the compiler vectorises), then one increment per pixel, pixel j going to lane j % lanes. */
static void count_block(Tables *tab, const uint8_t *t, const uint8_t *p, Py_ssize_t n) {
    uint16_t fused[STEP]; /* t * stride + p < 256 * 256 */
    const uint16_t stride = (uint16_t)tab->stride;
    for (Py_ssize_t start = 0; start < n; start += STEP) {
        int m = n - start < STEP ? (int)(n - start) : STEP, j = 0;
        for (int q = 0; q < m; q++) fused[q] = (uint16_t)(t[start + q] * stride + p[start + q]);
        if (tab->lanes == LANES)
            for (; j + LANES <= m; j += LANES)
                for (int k = 0; k < LANES; k++) tab->counts[k * tab->lane + fused[j + k]]++;
        for (; j < m; j++) tab->counts[fused[j]]++;
    }
    tab->pending += n;
}

/* Counts n pairs into out; sets *rows, *cols (see count_pairs); returns -1 when out of memory. */
static int count(const uint8_t *t, const uint8_t *p, Py_ssize_t n, int64_t *out, int *rows, int *cols) {
    Tables tab = {.lanes = n >= BLOCK ? LANES : 1};
    int status = 0;
    for (Py_ssize_t start = 0; start < n; start += BLOCK) {
        Py_ssize_t size = n - start < BLOCK ? n - start : BLOCK;
        if (grow(&tab, max_byte(t + start, size) + 1, max_byte(p + start, size) + 1, out)) {
            status = -1;
            break;
        }
        if (tab.pending >= FOLD_EVERY) {
            fold(&tab, out);
            memset(tab.counts, 0, tab.lanes * tab.lane * sizeof *tab.counts);
        }
        count_block(&tab, t + start, p + start, size);
    }
    if (status == 0) fold(&tab, out);
    free(tab.counts);
    *rows = tab.rows;
    *cols = tab.cols;
    return status;
}

static PyObject *count_pairs(PyObject *self, PyObject *args) {
    Py_buffer t, p, out;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*y*w*:count_pairs", &t, &p, &out)) return NULL;
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
    PyBuffer_Release(&t);
    PyBuffer_Release(&p);
    PyBuffer_Release(&out);
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
