/* kiln — IDX files of unsigned bytes, plain or gzip-compressed (zlib reads both). */
#define _POSIX_C_SOURCE 200809L
#include "data/data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

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

/* zlib's gzerror() text starts with "PATH: "; drop it since our messages name the path. */
static const char *gz_msg(gzFile f, const char *path, int *errnum) {
    const char *m = gzerror(f, errnum);
    if (!m) return "unknown error";
    size_t n = strlen(path);
    if (strncmp(m, path, n) == 0 && m[n] == ':' && m[n + 1] == ' ') m += n + 2;
    return m;
}

/* Read up to len bytes; returns bytes read (short only at end of stream) or -1 on a
 * stream/read error (message left in ctx). */
static int64_t gz_read_all(kn_ctx *ctx, gzFile f, const char *path, uint8_t *buf, int64_t len,
                           int *eof_early, int *rc) {
    int64_t got = 0;
    *eof_early = 0;
    while (got < len) {
        int64_t want = len - got;
        unsigned chunk = want > (int64_t)IO_CHUNK ? IO_CHUNK : (unsigned)want;
        int r = gzread(f, buf + got, chunk);
        if (r < 0) break;
        if (r == 0) break;
        got += r;
    }
    int saved_errno = errno, errnum = Z_OK;
    const char *m = gz_msg(f, path, &errnum);
    if (errnum == Z_OK) return got;
    if (errnum == Z_BUF_ERROR) { /* gzip stream cut short */
        *eof_early = 1;
        return got;
    }
    if (errnum == Z_ERRNO)
        *rc = kn_err(ctx, KN_ERR_IO, "%s: cannot read: %s", path, strerror(saved_errno));
    else
        *rc = kn_err(ctx, KN_ERR_FORMAT,
               "%s: corrupt gzip stream (zlib: %s); the file is damaged, fetch it again", path, m);
    return -1;
}

static void dims_str(char *buf, size_t n, int nd, const int64_t *dims) {
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < nd && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? "x%lld" : "%lld", (long long)dims[i]);
}

int kn_idx_load(kn_ctx *ctx, const char *path, kn_idx *out) {
    memset(out, 0, sizeof *out);
    errno = 0;
    gzFile f = gzopen(path, "rb");
    if (!f) {
        int e = errno;
        if (e == ENOENT)
            return kn_err(ctx, KN_ERR_IO,
                          "%s: cannot open: %s (install Debian's dataset-fashion-mnist or set "
                          "data.dir)",
                          path, strerror(e));
        if (e == 0) return kn_err(ctx, KN_ERR_NOMEM, "%s: cannot open: out of memory", path);
        return kn_err(ctx, KN_ERR_IO, "%s: cannot open: %s", path, strerror(e));
    }
    gzbuffer(f, 1u << 18);

    int rc = KN_OK, early = 0;
    uint8_t *data = NULL;
    uint8_t hdr[4 + 4 * 255];
    int64_t got = gz_read_all(ctx, f, path, hdr, 4, &early, &rc);
    if (got < 0) goto fail;
    const char *kind = gzdirect(f) ? "" : " (after gunzip)";
    if (got < 4) {
        rc = kn_err(ctx, KN_ERR_FORMAT,
                    "%s: expected an IDX file: a 4-byte header (0x00 0x00 TYPE NDIMS), found "
                    "only %lld bytes%s",
                    path, (long long)got, kind);
        goto fail;
    }
    if (hdr[0] != 0 || hdr[1] != 0) {
        rc = kn_err(ctx, KN_ERR_FORMAT,
                    "%s: expected an IDX file: first two bytes 0x00 0x00, found 0x%02X 0x%02X%s",
                    path, hdr[0], hdr[1], kind);
        goto fail;
    }
    int type = hdr[2], nd = hdr[3];
    if (type != 0x08) {
        rc = kn_err(ctx, KN_ERR_FORMAT,
                    "%s: IDX element type 0x%02X (%s) is not supported; kiln reads unsigned-byte "
                    "IDX files (type 0x08)",
                    path, type, idx_type_name(type));
        goto fail;
    }
    if (nd < 1 || nd > 4) {
        rc = kn_err(ctx, KN_ERR_FORMAT,
                    "%s: IDX header declares %d dimensions; kiln reads IDX files with 1 to 4 "
                    "dimensions",
                    path, nd);
        goto fail;
    }
    got = gz_read_all(ctx, f, path, hdr + 4, 4 * nd, &early, &rc);
    if (got < 0) goto fail;
    if (got < 4 * nd) {
        rc = kn_err(ctx, KN_ERR_FORMAT,
                    "%s: truncated: header declares %d dimensions (%d bytes of sizes), found %lld "
                    "bytes%s",
                    path, nd, 4 * nd, (long long)got, early ? " (the gzip stream ends early)" : "");
        goto fail;
    }
    int64_t total = 1;
    for (int i = 0; i < nd; i++) {
        const uint8_t *p = hdr + 4 + 4 * i;
        int32_t d = (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
                              ((uint32_t)p[2] << 8) | (uint32_t)p[3]);
        out->dims[i] = d;
        if (d <= 0) {
            rc = kn_err(ctx, KN_ERR_FORMAT,
                        "%s: IDX dimension %d is %d; every dimension must be at least 1", path, i,
                        (int)d);
            goto fail;
        }
        total *= d;
        if (total > IDX_MAX_BYTES) {
            char ds[128];
            dims_str(ds, sizeof ds, i + 1, out->dims);
            rc = kn_err(ctx, KN_ERR_FORMAT,
                        "%s: IDX dimensions %s%s exceed the limit of 2^31 bytes of data", path, ds,
                        i + 1 < nd ? "x..." : "");
            goto fail;
        }
    }
    out->nd = nd;

    data = malloc((size_t)total);
    if (!data) {
        rc = kn_err(ctx, KN_ERR_NOMEM, "%s: out of memory for %lld bytes of data", path,
                    (long long)total);
        goto fail;
    }
    got = gz_read_all(ctx, f, path, data, total, &early, &rc);
    if (got < 0) goto fail;
    if (got < total) {
        char ds[128];
        dims_str(ds, sizeof ds, nd, out->dims);
        rc = kn_err(ctx, KN_ERR_FORMAT,
                    "%s: truncated: header promises %lld bytes of data (dimensions %s), found %lld%s", path,
                    (long long)total, ds, (long long)got,
                    early ? " (the gzip stream ends early)" : "");
        goto fail;
    }
    /* Read to the end: counts trailing bytes, and zlib checks the gzip CRC only there. */
    {
        uint8_t tail[4096];
        int64_t extra = 0;
        for (;;) {
            got = gz_read_all(ctx, f, path, tail, (int64_t)sizeof tail, &early, &rc);
            if (got < 0) goto fail;
            extra += got;
            if (got < (int64_t)sizeof tail) break;
        }
        if (early) {
            rc = kn_err(ctx, KN_ERR_FORMAT,
                        "%s: corrupt gzip stream: it ends before its checksum (the file was cut "
                        "short); fetch it again",
                        path);
            goto fail;
        }
        if (extra > 0) {
            char ds[128];
            dims_str(ds, sizeof ds, nd, out->dims);
            rc = kn_err(ctx, KN_ERR_FORMAT,
                        "%s: %lld unexpected bytes after the data (header promises %lld bytes of "
                        "data for dimensions %s); is this the right file?",
                        path, (long long)extra, (long long)total, ds);
            goto fail;
        }
    }
    int zrc = gzclose_r(f);
    f = NULL;
    if (zrc != Z_OK) {
        rc = kn_err(ctx, KN_ERR_IO, "%s: error closing the file (zlib code %d)", path, zrc);
        goto fail;
    }
    out->data = data;
    return KN_OK;

fail:
    if (f) gzclose_r(f);
    free(data);
    memset(out, 0, sizeof *out);
    return rc ? rc : KN_ERR_FORMAT;
}

void kn_idx_free(kn_idx *x) {
    if (!x) return;
    free(x->data);
    memset(x, 0, sizeof *x);
}

int kn_idx_write(kn_ctx *ctx, const char *path, int nd, const int64_t *dims, const uint8_t *data,
                 int gz) {
    if (nd < 1 || nd > 4)
        return kn_err(ctx, KN_ERR_INVALID, "%s: cannot write an IDX file with %d dimensions (1 to 4)",
                      path, nd);
    int64_t total = 1;
    for (int i = 0; i < nd; i++) {
        if (dims[i] <= 0 || dims[i] > INT32_MAX)
            return kn_err(ctx, KN_ERR_INVALID,
                          "%s: cannot write IDX dimension %d = %lld (must be 1 to 2^31-1)", path, i,
                          (long long)dims[i]);
        total *= dims[i];
        if (total > IDX_MAX_BYTES)
            return kn_err(ctx, KN_ERR_INVALID, "%s: IDX data larger than 2^31 bytes", path);
    }
    if (!data)
        return kn_err(ctx, KN_ERR_INVALID, "%s: no data given for the IDX file", path);

    uint8_t hdr[4 + 16];
    hdr[0] = 0;
    hdr[1] = 0;
    hdr[2] = 0x08;
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
