/* kiln — IDX files, plain or gzip-compressed: unsigned bytes (kn_idx_load, the image
 * datasets) and every element type the format defines (kn_idx_read, typed sources). */
#define _POSIX_C_SOURCE 200809L
#include "data/data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "data/input.h"
#include "data/source.h"

#define IDX_MAX_BYTES ((int64_t)1 << 31)
#define IO_CHUNK ((unsigned)1 << 24)

static const char *idx_type_name(int t) {
    switch (t) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "short";
    case 0x0C: return "int";
    case 0x0D: return "float";
    case 0x0E: return "double";
    default: return "unknown type";
    }
}

static void dims_str(char *buf, size_t n, int nd, const int64_t *dims) {
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < nd && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? "x%lld" : "%lld", (long long)dims[i]);
}

static int idx_elsize(int type) {
    switch (type) {
    case 0x08: case 0x09: return 1;
    case 0x0B: return 2;
    case 0x0C: case 0x0D: return 4;
    case 0x0E: return 8;
    default: return 0;
    }
}

/* The header: magic, type, dimensions, all checked. *total gets the data size in bytes.
 * typed == 0: unsigned bytes only, 1 to 4 dimensions, at most 2^31 bytes (kn_idx_load);
 * typed == 1: every element type, 1 to KN_MAX_DIMS dimensions, at most KN_DATA_MAX_BYTES. */
static int read_header(kn_ctx *ctx, kn_in *s, const char *path, int typed, int *type_out, int *nd_out, int64_t *dims,
                       int64_t *total_out) {
    int rc = KN_OK;
    uint8_t hdr[4 + 4 * KN_MAX_DIMS];
    int64_t got = kn_in_read(ctx, s, hdr, 4, &rc);
    if (got < 0) return rc;
    const char *kind = s->gz ? " (after gunzip)" : "";
    if (got < 4)
        return kn_err(ctx, KN_ERR_FORMAT,
                      "%s: expected an IDX file: a 4-byte header (0x00 0x00 TYPE NDIMS), found "
                      "only %lld bytes%s%s",
                      path, (long long)got, kind, s->cut ? " (the gzip stream ends early: the file was cut short)" : "");
    if (hdr[0] != 0 || hdr[1] != 0)
        return kn_err(ctx, KN_ERR_FORMAT,
                      "%s: expected an IDX file: first two bytes 0x00 0x00, found 0x%02X 0x%02X%s",
                      path, hdr[0], hdr[1], kind);
    int type = hdr[2], nd = hdr[3];
    const int maxnd = typed ? KN_MAX_DIMS : 4;
    if (!typed && type != 0x08)
        return kn_err(ctx, KN_ERR_FORMAT,
                      "%s: IDX element type 0x%02X (%s) is not supported; kiln reads unsigned-byte "
                      "IDX files (type 0x08)",
                      path, type, idx_type_name(type));
    if (typed && !idx_elsize(type))
        return kn_err(ctx, KN_ERR_FORMAT,
                      "%s: IDX element type 0x%02X is not one the format defines (0x08 unsigned byte, 0x09 signed "
                      "byte, 0x0B short, 0x0C int, 0x0D float, 0x0E double); is this an IDX file?",
                      path, type);
    if (nd < 1 || nd > maxnd)
        return kn_err(ctx, KN_ERR_FORMAT,
                      "%s: IDX header declares %d dimensions; kiln reads IDX files with 1 to %d "
                      "dimensions",
                      path, nd, maxnd);
    got = kn_in_read(ctx, s, hdr + 4, 4 * nd, &rc);
    if (got < 0) return rc;
    if (got < 4 * nd)
        return kn_err(ctx, KN_ERR_FORMAT,
                      "%s: truncated: header declares %d dimensions (%d bytes of sizes), found %lld "
                      "bytes%s",
                      path, nd, 4 * nd, (long long)got, s->cut ? " (the gzip stream ends early: the file was cut short)" : "");
    const int64_t limit = typed ? KN_DATA_MAX_BYTES : IDX_MAX_BYTES;
    int64_t total = typed ? idx_elsize(type) : 1;
    for (int i = 0; i < nd; i++) {
        const uint8_t *p = hdr + 4 + 4 * i;
        int32_t d = (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
                              ((uint32_t)p[2] << 8) | (uint32_t)p[3]);
        dims[i] = d;
        if (d <= 0)
            return kn_err(ctx, KN_ERR_FORMAT,
                          "%s: IDX dimension %d is %d; every dimension must be at least 1", path, i,
                          (int)d);
        if (kn_mul_ovf(total, d, &total) || total > limit) {
            char ds[128];
            dims_str(ds, sizeof ds, i + 1, dims);
            return kn_err(ctx, KN_ERR_FORMAT,
                          "%s: IDX dimensions %s%s exceed the limit of 2^%d bytes of data", path, ds,
                          i + 1 < nd ? "x..." : "", typed ? 34 : 31);
        }
    }
    *type_out = type;
    *nd_out = nd;
    *total_out = total;
    return KN_OK;
}

/* The data after the header: exactly `total` bytes, then the end of the file (and of a
 * gzip stream's verified trailer). *data malloc'ed. */
static int read_body(kn_ctx *ctx, kn_in *s, const char *path, int nd, const int64_t *dims, int64_t total,
                     uint8_t **data_out) {
    int rc = KN_OK;
    uint8_t *data = NULL;
    int64_t got;
    *data_out = NULL;
    /* the buffer grows with the data actually read (doubling): a header that promises
     * more than the file holds costs no more memory than the file */
    {
        int64_t cap = total < ((int64_t)1 << 20) ? total : ((int64_t)1 << 20);
        got = 0;
        for (;;) {
            uint8_t *nb = realloc(data, (size_t)cap);
            if (!nb) {
                free(data);
                return kn_err(ctx, KN_ERR_NOMEM, "%s: out of memory for %lld bytes of data", path, (long long)cap);
            }
            data = nb;
            int64_t r = kn_in_read(ctx, s, data + got, cap - got, &rc);
            if (r < 0) goto fail;
            got += r;
            if (got < cap || cap == total) break;
            cap = cap > total / 2 ? total : 2 * cap;
        }
    }
    if (got < total) {
        char ds[128];
        dims_str(ds, sizeof ds, nd, dims);
        rc = kn_err(ctx, KN_ERR_FORMAT,
                    "%s: truncated: header promises %lld bytes of data (dimensions %s), found %lld%s", path,
                    (long long)total, ds, (long long)got,
                    s->cut ? " (the gzip stream ends early: the file was cut short)" : "");
        goto fail;
    }
    /* Read to the end: counts trailing bytes, and a gzip stream must end with its
     * verified trailer. */
    {
        uint8_t tail[4096];
        int64_t extra = 0;
        for (;;) {
            got = kn_in_read(ctx, s, tail, (int64_t)sizeof tail, &rc);
            if (got < 0) goto fail;
            extra += got;
            if (got < (int64_t)sizeof tail) break;
        }
        if (s->cut) {
            rc = kn_err(ctx, KN_ERR_FORMAT,
                        "%s: corrupt gzip stream: it ends before its checksum (the file was cut "
                        "short); fetch it again",
                        path);
            goto fail;
        }
        if (extra > 0) {
            char ds[128];
            dims_str(ds, sizeof ds, nd, dims);
            rc = kn_err(ctx, KN_ERR_FORMAT,
                        "%s: %lld unexpected bytes after the data (header promises %lld bytes of "
                        "data for dimensions %s); is this the right file?",
                        path, (long long)extra, (long long)total, ds);
            goto fail;
        }
    }
    *data_out = data;
    return KN_OK;
fail:
    free(data);
    return rc ? rc : KN_ERR_FORMAT;
}

int kn_idx_peek(kn_ctx *ctx, const char *path, int *nd, int64_t dims[4]) {
    kn_in s;
    int64_t total;
    int type;
    *nd = 0;
    int rc = kn_in_open(ctx, &s, path, "install Debian's dataset-fashion-mnist or set data.dir");
    if (!rc) rc = read_header(ctx, &s, path, 0, &type, nd, dims, &total);
    kn_in_close(&s);
    if (rc) *nd = 0;
    return rc;
}

int kn_idx_load(kn_ctx *ctx, const char *path, kn_idx *out) {
    memset(out, 0, sizeof *out);
    kn_in s;
    int type, nd = 0;
    int64_t total = 0;
    uint8_t *data = NULL;
    int rc = kn_in_open(ctx, &s, path, "install Debian's dataset-fashion-mnist or set data.dir");
    if (!rc) rc = read_header(ctx, &s, path, 0, &type, &nd, out->dims, &total);
    if (!rc) rc = read_body(ctx, &s, path, nd, out->dims, total, &data);
    kn_in_close(&s);
    if (rc) {
        memset(out, 0, sizeof *out);
        return rc;
    }
    out->nd = nd;
    out->data = data;
    return KN_OK;
}

static kn_eltype idx_eltype(int type) {
    switch (type) {
    case 0x08: return KN_EL_U8;
    case 0x09: return KN_EL_I8;
    case 0x0B: return KN_EL_I16;
    case 0x0C: return KN_EL_I32;
    case 0x0D: return KN_EL_F32;
    default: return KN_EL_F64;
    }
}

int kn_idx_read(kn_ctx *ctx, const char *path, kn_array *out) {
    memset(out, 0, sizeof *out);
    kn_in s;
    int type = 0, nd = 0;
    int64_t total = 0, dims[KN_MAX_DIMS] = {0};
    uint8_t *data = NULL;
    int rc = kn_in_open(ctx, &s, path, NULL);
    if (!rc) rc = read_header(ctx, &s, path, 1, &type, &nd, dims, &total);
    if (!rc) rc = read_body(ctx, &s, path, nd, dims, total, &data);
    kn_in_close(&s);
    if (rc) return rc;
    /* big-endian on disk to the host's order */
    const int es = idx_elsize(type);
    const int64_t n = total / es;
    if (es > 1) {
        for (int64_t i = 0; i < n; i++) {
            uint8_t *p = data + i * es;
            for (int a = 0, b = es - 1; a < b; a++, b--) {
                uint8_t t = p[a];
                p[a] = p[b];
                p[b] = t;
            }
        }
    }
    out->type = idx_eltype(type);
    out->nd = nd;
    memcpy(out->dims, dims, sizeof dims);
    out->numel = n;
    out->data = data;
    return KN_OK;
}

void kn_idx_free(kn_idx *x) {
    if (!x) return;
    free(x->data);
    memset(x, 0, sizeof *x);
}

/* zlib's gzerror() text starts with "PATH: "; drop it since our messages name the path. */
static const char *gz_msg(gzFile f, const char *path, int *errnum) {
    const char *m = gzerror(f, errnum);
    if (!m) return "unknown error";
    size_t n = strlen(path);
    if (strncmp(m, path, n) == 0 && m[n] == ':' && m[n + 1] == ' ') m += n + 2;
    return m;
}

static int idx_write(kn_ctx *ctx, const char *path, int type, int maxnd, int nd, const int64_t *dims, const uint8_t *data,
                     int gz) {
    const int es = idx_elsize(type);
    if (nd < 1 || nd > maxnd)
        return kn_err(ctx, KN_ERR_INVALID, "%s: cannot write an IDX file with %d dimensions (1 to %d)",
                      path, nd, maxnd);
    int64_t total = es;
    for (int i = 0; i < nd; i++) {
        if (dims[i] <= 0 || dims[i] > INT32_MAX)
            return kn_err(ctx, KN_ERR_INVALID,
                          "%s: cannot write IDX dimension %d = %lld (must be 1 to 2^31-1)", path, i,
                          (long long)dims[i]);
        if (kn_mul_ovf(total, dims[i], &total) || total > (es > 1 ? KN_DATA_MAX_BYTES : IDX_MAX_BYTES))
            return kn_err(ctx, KN_ERR_INVALID, "%s: IDX data larger than the limit (2^%d bytes)", path, es > 1 ? 34 : 31);
    }
    if (!data)
        return kn_err(ctx, KN_ERR_INVALID, "%s: no data given for the IDX file", path);

    uint8_t hdr[4 + 4 * KN_MAX_DIMS];
    hdr[0] = 0;
    hdr[1] = 0;
    hdr[2] = (uint8_t)type;
    hdr[3] = (uint8_t)nd;
    for (int i = 0; i < nd; i++) {
        uint32_t d = (uint32_t)dims[i];
        hdr[4 + 4 * i] = (uint8_t)(d >> 24);
        hdr[5 + 4 * i] = (uint8_t)(d >> 16);
        hdr[6 + 4 * i] = (uint8_t)(d >> 8);
        hdr[7 + 4 * i] = (uint8_t)d;
    }
    size_t hlen = 4 + 4 * (size_t)nd;

    if (!gz) {
        FILE *fp = fopen(path, "wb");
        if (!fp) return kn_err(ctx, KN_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        int ok = fwrite(hdr, 1, hlen, fp) == hlen &&
                 fwrite(data, 1, (size_t)total, fp) == (size_t)total;
        int e = errno;
        if (fclose(fp) != 0 && ok) {
            ok = 0;
            e = errno;
        }
        if (!ok) return kn_err(ctx, KN_ERR_IO, "%s: write failed: %s", path, strerror(e));
        return KN_OK;
    }

    errno = 0;
    gzFile f = gzopen(path, "wb");
    if (!f)
        return kn_err(ctx, KN_ERR_IO, "%s: cannot create: %s", path,
                      errno ? strerror(errno) : "out of memory");
    int ok = gzwrite(f, hdr, (unsigned)hlen) == (int)hlen;
    for (int64_t off = 0; ok && off < total;) {
        int64_t left = total - off;
        unsigned chunk = left > (int64_t)IO_CHUNK ? IO_CHUNK : (unsigned)left;
        ok = gzwrite(f, data + off, chunk) == (int)chunk;
        off += chunk;
    }
    int errnum = Z_OK;
    char zmsg[256] = "";
    if (!ok) {
        const char *m = gz_msg(f, path, &errnum);
        kn_strlcpy(zmsg, errnum == Z_ERRNO ? strerror(errno) : m, sizeof zmsg);
    }
    int zrc = gzclose_w(f);
    if (!ok) return kn_err(ctx, KN_ERR_IO, "%s: write failed: %s", path, zmsg);
    if (zrc != Z_OK)
        return kn_err(ctx, KN_ERR_IO, "%s: write failed while closing (%s)", path,
                      zrc == Z_ERRNO ? strerror(errno) : "zlib error");
    return KN_OK;
}

int kn_idx_write(kn_ctx *ctx, const char *path, int nd, const int64_t *dims, const uint8_t *data, int gz) {
    return idx_write(ctx, path, 0x08, 4, nd, dims, data, gz);
}

int kn_idx_write_typed(kn_ctx *ctx, const char *path, kn_eltype t, int nd, const int64_t *dims, const void *data,
                       int gz) {
    static const int code[] = {[KN_EL_U8] = 0x08, [KN_EL_I8] = 0x09, [KN_EL_I16] = 0x0B, [KN_EL_I32] = 0x0C,
                               [KN_EL_I64] = 0, [KN_EL_F32] = 0x0D, [KN_EL_F64] = 0x0E};
    if ((unsigned)t > KN_EL_F64 || !code[t])
        return kn_err(ctx, KN_ERR_INVALID, "%s: IDX has no element type for %s", path, kn_eltype_name(t));
    const int type = code[t], es = idx_elsize(type);
    int64_t n = 1;
    for (int i = 0; i < nd && i < KN_MAX_DIMS; i++)
        if (dims[i] <= 0 || kn_mul_ovf(n, dims[i], &n)) return idx_write(ctx, path, type, KN_MAX_DIMS, nd, dims, data, gz);
    if (es == 1 || !data || nd < 1 || nd > KN_MAX_DIMS || n > KN_DATA_MAX_BYTES / es)
        return idx_write(ctx, path, type, KN_MAX_DIMS, nd, dims, data, gz);
    uint8_t *be = malloc((size_t)(n * es));
    if (!be) return kn_err(ctx, KN_ERR_NOMEM, "%s: out of memory writing %lld elements", path, (long long)n);
    const uint8_t *src = data;
    for (int64_t i = 0; i < n; i++)
        for (int b = 0; b < es; b++) be[i * es + b] = src[i * es + es - 1 - b];
    int rc = idx_write(ctx, path, type, KN_MAX_DIMS, nd, dims, be, gz);
    free(be);
    return rc;
}
