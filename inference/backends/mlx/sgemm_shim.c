/* MLX's float32 matrix products on NumPy's OpenBLAS (see blas_shim.py).
 *
 * This library defines cblas_sgemm. Loaded into the global symbol scope before MLX, it takes the
 * calls MLX would make to its bundled reference BLAS and forwards them to the OpenBLAS entry
 * points trillm_sgemm_bind() was given (NumPy's OpenBLAS exports them under renamed symbols, with
 * 32- or 64-bit integers). Products of a few rows, a decode step's, go row by row through sgemv.
 *
 * A child process that gets it through LD_PRELOAD is bound from the environment instead
 * (TRILLM_SGEMM_LIBRARY, _GEMM, _GEMV, _ILP64, _ROWS; see blas_shim.preload_env). Unbound, it
 * passes every call on to the next cblas_sgemm (MLX's own) and counts none.
 *
 * It links against nothing but libdl, so it is built once when trillm is installed, whatever NumPy
 * is installed later; blas_shim.py compiles it at run time only where no built copy exists.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };

typedef void (*gemm32_fn)(int, int, int, int32_t, int32_t, int32_t, float, const float *, int32_t,
                          const float *, int32_t, float, float *, int32_t);
typedef void (*gemv32_fn)(int, int, int32_t, int32_t, float, const float *, int32_t, const float *,
                          int32_t, float, float *, int32_t);
typedef void (*gemm64_fn)(int, int, int, int64_t, int64_t, int64_t, float, const float *, int64_t,
                          const float *, int64_t, float, float *, int64_t);
typedef void (*gemv64_fn)(int, int, int64_t, int64_t, float, const float *, int64_t, const float *,
                          int64_t, float, float *, int64_t);

static void *gemm_entry;
static void *gemv_entry;
static int ilp64;
static int gemv_rows = 4;
static unsigned long calls;

/* Set the OpenBLAS entry points (before MLX is imported); `rows`: products with at most this many
 * rows go through sgemv. */
void trillm_sgemm_bind(void *gemm, void *gemv, int is_ilp64, int rows) {
  gemm_entry = gemm;
  gemv_entry = gemv;
  ilp64 = is_ilp64;
  gemv_rows = rows;
}

__attribute__((constructor)) static void bind_from_environment(void) {
  const char *library = getenv("TRILLM_SGEMM_LIBRARY");
  const char *gemm_name = getenv("TRILLM_SGEMM_GEMM");
  const char *gemv_name = getenv("TRILLM_SGEMM_GEMV");
  if (library == NULL || gemm_name == NULL || gemv_name == NULL) return;
  void *handle = dlopen(library, RTLD_NOW | RTLD_LOCAL);
  if (handle == NULL) return;
  void *gemm_symbol = dlsym(handle, gemm_name), *gemv_symbol = dlsym(handle, gemv_name);
  const char *wide = getenv("TRILLM_SGEMM_ILP64"), *rows = getenv("TRILLM_SGEMM_ROWS");
  if (gemm_symbol != NULL && gemv_symbol != NULL)
    trillm_sgemm_bind(gemm_symbol, gemv_symbol, wide != NULL && wide[0] == '1', rows ? atoi(rows) : 4);
}

unsigned long trillm_sgemm_calls(void) { return __atomic_load_n(&calls, __ATOMIC_RELAXED); }

static void gemm(int order, int ta, int tb, long m, long n, long k, float alpha, const float *a,
                 long lda, const float *b, long ldb, float beta, float *c, long ldc) {
  if (ilp64)
    ((gemm64_fn)gemm_entry)(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  else
    ((gemm32_fn)gemm_entry)(order, ta, tb, (int32_t)m, (int32_t)n, (int32_t)k, alpha, a,
                            (int32_t)lda, b, (int32_t)ldb, beta, c, (int32_t)ldc);
}

static void gemv(int order, int trans, long m, long n, float alpha, const float *a, long lda,
                 const float *x, long incx, float beta, float *y) {
  if (ilp64)
    ((gemv64_fn)gemv_entry)(order, trans, m, n, alpha, a, lda, x, incx, beta, y, 1);
  else
    ((gemv32_fn)gemv_entry)(order, trans, (int32_t)m, (int32_t)n, alpha, a, (int32_t)lda, x,
                            (int32_t)incx, beta, y, 1);
}

void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc) {
  if (gemm_entry == NULL || gemv_entry == NULL) { /* never bound: MLX's own BLAS, uncounted */
    typedef void (*cblas_fn)(int, int, int, int, int, int, float, const float *, int, const float *,
                             int, float, float *, int);
    cblas_fn next = (cblas_fn)dlsym(RTLD_NEXT, "cblas_sgemm");
    if (next == NULL) abort();
    next(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  __atomic_fetch_add(&calls, 1, __ATOMIC_RELAXED);
  if (order != ROW_MAJOR || m > gemv_rows || k == 0) {
    gemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  /* A few rows: one matrix-vector product per row of C reads B once per row instead of packing
     all of it, and gives each row the same result whatever M is. */
  for (int i = 0; i < m; i++) {
    const float *x = trans_a == NO_TRANS ? a + (long)i * lda : a + i;
    long incx = trans_a == NO_TRANS ? 1 : lda;
    float *y = c + (long)i * ldc;
    if (beta == 0.0f) memset(y, 0, sizeof(float) * (size_t)n); /* C may hold garbage, even NaN */
    if (trans_b == NO_TRANS) /* B is K x N: y = B^T x */
      gemv(ROW_MAJOR, TRANS, k, n, alpha, b, ldb, x, incx, beta, y);
    else /* B is N x K: y = B x */
      gemv(ROW_MAJOR, NO_TRANS, n, k, alpha, b, ldb, x, incx, beta, y);
  }
}
