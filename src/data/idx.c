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

/* ---------------- input: plain bytes or a gzip stream ----------------
 * zlib's gzread is not used for reading: when the compressed data ends exactly at the
 * end of the file (a gzip file whose 8-byte trailer was cut off), gzread reports a
 * clean end of file and the CRC-32 and length are never checked. Here inflate() must
 * reach Z_STREAM_END for every member (it verifies the trailer there), members may be
 * concatenated (as gzip allows), and anything else after the last one is an error. */
typedef struct {
    FILE *f;
    const char *path;
    int gz;          /* 1: gzip (magic 1f 8b) */
    int zinit;
    int ended;       /* gzip: the last member ended cleanly (no more input) */
    int cut;         /* gzip: the input ended inside a member */
    z_stream z;
    unsigned char in[1 << 16];
} kn_in;

static int in_fill(kn_ctx *ctx, kn_in *s) {
    size_t r = fread(s->in, 1, sizeof s->in, s->f);
    if (r == 0 && ferror(s->f)) return kn_err(ctx, KN_ERR_IO, "%s: cannot read: %s", s->path, strerror(errno));
    s->z.next_in = s->in;
    s->z.avail_in = (uInt)r;
    return KN_OK;
}

static int in_open(kn_ctx *ctx, kn_in *s, const char *path) {
    memset(s, 0, sizeof *s);
    s->path = path;
    errno = 0;
    s->f = fopen(path, "rb");
    if (!s->f) {
        int e = errno;
        if (e == ENOENT)
            return kn_err(ctx, KN_ERR_IO,
                          "%s: cannot open: %s (install Debian's dataset-fashion-mnist or set "
                          "data.dir)",
                          path, strerror(e));
        return kn_err(ctx, KN_ERR_IO, "%s: cannot open: %s", path, strerror(e));
    }
    int rc = in_fill(ctx, s);
    if (rc) return rc;
    if (s->z.avail_in == 0 && !feof(s->f)) /* e.g. a directory: fread fails with EISDIR */
        return kn_err(ctx, KN_ERR_IO, "%s: cannot read: %s", path, strerror(errno ? errno : EIO));
    if (s->z.avail_in >= 2 && s->in[0] == 0x1f && s->in[1] == 0x8b) {
        s->gz = 1;
        if (inflateInit2(&s->z, 15 + 16) != Z_OK) return kn_err(ctx, KN_ERR_NOMEM, "%s: cannot open: out of memory", path);
        s->zinit = 1;
    }
    return KN_OK;
}

static void in_close(kn_in *s) {
    if (s->zinit) inflateEnd(&s->z);
    if (s->f) fclose(s->f);
    s->f = NULL;
    s->zinit = 0;
}

/* Read up to len bytes; returns bytes read (short only at the end of the data) or -1 on
 * an error (message in ctx, code in *rc). s->cut tells a gzip stream that ended early. */
static int64_t in_read(kn_ctx *ctx, kn_in *s, uint8_t *buf, int64_t len, int *rc) {
    int64_t got = 0;
    if (!s->gz) {
        while (got < len) {
            if (s->z.avail_in == 0) {
                if ((*rc = in_fill(ctx, s))) return -1;
                if (s->z.avail_in == 0) break;
            }
            size_t k = s->z.avail_in < (uint64_t)(len - got) ? s->z.avail_in : (size_t)(len - got);
            memcpy(buf + got, s->z.next_in, k);
            s->z.next_in += k;
            s->z.avail_in -= (uInt)k;
            got += (int64_t)k;
        }
        return got;
    }
    while (got < len && !s->ended && !s->cut) {
        if (s->z.avail_in == 0) {
            if ((*rc = in_fill(ctx, s))) return -1;
            if (s->z.avail_in == 0) { s->cut = 1; break; } /* no more input inside a member */
        }
        int64_t want = len - got;
        s->z.next_out = buf + got;
        s->z.avail_out = want > (int64_t)IO_CHUNK ? IO_CHUNK : (uInt)want;
        uInt before = s->z.avail_out;
        int zr = inflate(&s->z, Z_NO_FLUSH);
        got += before - s->z.avail_out;
        if (zr == Z_STREAM_END) { /* trailer verified; another member, or the end */
            if (s->z.avail_in == 0 && (*rc = in_fill(ctx, s))) return -1;
            if (s->z.avail_in == 0) { s->ended = 1; break; }
            if (s->z.avail_in >= 2 ? !(s->z.next_in[0] == 0x1f && s->z.next_in[1] == 0x8b) : s->z.next_in[0] != 0x1f) {
                /* count what follows the stream */
                int64_t extra = s->z.avail_in;
                for (;;) {
                    if ((*rc = in_fill(ctx, s))) return -1;
                    if (s->z.avail_in == 0) break;
                    extra += s->z.avail_in;
                }
                *rc = kn_err(ctx, KN_ERR_FORMAT, "%s: %lld bytes after the end of the gzip stream; the file is damaged, fetch it again",
                             s->path, (long long)extra);
                return -1;
            }
            inflateReset(&s->z);
        } else if (zr == Z_BUF_ERROR && s->z.avail_in == 0) {
            continue; /* needs more input: the loop refills (or finds the end: cut) */
        } else if (zr == Z_MEM_ERROR) {
            *rc = kn_err(ctx, KN_ERR_NOMEM, "%s: out of memory decompressing", s->path);
            return -1;
        } else if (zr != Z_OK) {
            *rc = kn_err(ctx, KN_ERR_FORMAT, "%s: corrupt gzip stream (zlib: %s); the file is damaged, fetch it again", s->path,
                         s->z.msg ? s->z.msg : "invalid data");
            return -1;
        }
    }
    return got;
}

static void dims_str(char *buf, size_t n, int nd, const int64_t *dims) {
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < nd && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? "x%lld" : "%lld", (long long)dims[i]);
}

/* The header: magic, type, dimensions, all checked. *total gets the data size. */
static int read_header(kn_ctx *ctx, kn_in *s, const char *path, int *nd_out, int64_t dims[4], int64_t *total_out) {
    int rc = KN_OK;
    uint8_t hdr[4 + 4 * 4];
    int64_t got = in_read(ctx, s, hdr, 4, &rc);
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
    if (type != 0x08)
        return kn_err(ctx, KN_ERR_FORMAT,
                      "%s: IDX element type 0x%02X (%s) is not supported; kiln reads unsigned-byte "
                      "IDX files (type 0x08)",
                      path, type, idx_type_name(type));
    if (nd < 1 || nd > 4)
        return kn_err(ctx, KN_ERR_FORMAT,
                      "%s: IDX header declares %d dimensions; kiln reads IDX files with 1 to 4 "
                      "dimensions",
                      path, nd);
    got = in_read(ctx, s, hdr + 4, 4 * nd, &rc);
    if (got < 0) return rc;
    if (got < 4 * nd)
        return kn_err(ctx, KN_ERR_FORMAT,
                      "%s: truncated: header declares %d dimensions (%d bytes of sizes), found %lld "
                      "bytes%s",
                      path, nd, 4 * nd, (long long)got, s->cut ? " (the gzip stream ends early: the file was cut short)" : "");
    int64_t total = 1;
    for (int i = 0; i < nd; i++) {
        const uint8_t *p = hdr + 4 + 4 * i;
        int32_t d = (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
                              ((uint32_t)p[2] << 8) | (uint32_t)p[3]);
        dims[i] = d;
        if (d <= 0)
            return kn_err(ctx, KN_ERR_FORMAT,
                          "%s: IDX dimension %d is %d; every dimension must be at least 1", path, i,
                          (int)d);
        total *= d; /* at most 2^31 * (2^31 - 1): no overflow */
        if (total > IDX_MAX_BYTES) {
            char ds[128];
            dims_str(ds, sizeof ds, i + 1, dims);
            return kn_err(ctx, KN_ERR_FORMAT,
                          "%s: IDX dimensions %s%s exceed the limit of 2^31 bytes of data", path, ds,
                          i + 1 < nd ? "x..." : "");
        }
    }
    *nd_out = nd;
    *total_out = total;
    return KN_OK;
}

int kn_idx_peek(kn_ctx *ctx, const char *path, int *nd, int64_t dims[4]) {
    kn_in s;
    int64_t total;
    *nd = 0;
    int rc = in_open(ctx, &s, path);
    if (!rc) rc = read_header(ctx, &s, path, nd, dims, &total);
    in_close(&s);
    if (rc) *nd = 0;
    return rc;
}

int kn_idx_load(kn_ctx *ctx, const char *path, kn_idx *out) {
    memset(out, 0, sizeof *out);
    kn_in s;
    int rc = in_open(ctx, &s, path);
    uint8_t *data = NULL;
    int nd = 0;
    int64_t total = 0, got;
    if (rc) goto fail;
    if ((rc = read_header(ctx, &s, path, &nd, out->dims, &total))) goto fail;
    out->nd = nd;
    /* the buffer grows with the data actually read (doubling): a header that promises
     * more than the file holds costs no more memory than the file */
    {
        int64_t cap = total < ((int64_t)1 << 20) ? total : ((int64_t)1 << 20);
        got = 0;
        for (;;) {
            uint8_t *nb = realloc(data, (size_t)cap);
            if (!nb) {
                rc = kn_err(ctx, KN_ERR_NOMEM, "%s: out of memory for %lld bytes of data", path, (long long)cap);
                goto fail;
            }
            data = nb;
            int64_t r = in_read(ctx, &s, data + got, cap - got, &rc);
            if (r < 0) goto fail;
            got += r;
            if (got < cap || cap == total) break;
            cap = cap > total / 2 ? total : 2 * cap;
        }
    }
    if (got < total) {
        char ds[128];
        dims_str(ds, sizeof ds, nd, out->dims);
        rc = kn_err(ctx, KN_ERR_FORMAT,
                    "%s: truncated: header promises %lld bytes of data (dimensions %s), found %lld%s", path,
                    (long long)total, ds, (long long)got,
                    s.cut ? " (the gzip stream ends early: the file was cut short)" : "");
        goto fail;
    }
    /* Read to the end: counts trailing bytes, and a gzip stream must end with its
     * verified trailer. */
    {
        uint8_t tail[4096];
        int64_t extra = 0;
        for (;;) {
            got = in_read(ctx, &s, tail, (int64_t)sizeof tail, &rc);
            if (got < 0) goto fail;
            extra += got;
            if (got < (int64_t)sizeof tail) break;
        }
        if (s.cut) {
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
    in_close(&s);
    out->data = data;
    return KN_OK;

fail:
    in_close(&s);
    free(data);
    memset(out, 0, sizeof *out);
    return rc ? rc : KN_ERR_FORMAT;
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
