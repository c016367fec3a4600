/* kiln — data input: plain bytes or a gzip stream (zlib inflate, trailers verified). */
#define _POSIX_C_SOURCE 200809L
#include "data/input.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define IO_CHUNK ((unsigned)1 << 24)

static int in_fill(kn_ctx *ctx, kn_in *s) {
    size_t r = fread(s->in, 1, sizeof s->in, s->f);
    if (r == 0 && ferror(s->f)) return kn_err(ctx, KN_ERR_IO, "%s: cannot read: %s", s->path, strerror(errno));
    s->z.next_in = s->in;
    s->z.avail_in = (uInt)r;
    return KN_OK;
}

int kn_in_open(kn_ctx *ctx, kn_in *s, const char *path, const char *missing_hint) {
    memset(s, 0, sizeof *s);
    s->path = path;
    errno = 0;
    s->f = fopen(path, "rb");
    if (!s->f) {
        int e = errno;
        if (e == ENOENT && missing_hint)
            return kn_err(ctx, KN_ERR_IO, "%s: cannot open: %s (%s)", path, strerror(e), missing_hint);
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

void kn_in_close(kn_in *s) {
    if (s->zinit) inflateEnd(&s->z);
    if (s->f) fclose(s->f);
    s->f = NULL;
    s->zinit = 0;
}

int64_t kn_in_read(kn_ctx *ctx, kn_in *s, uint8_t *buf, int64_t len, int *rc) {
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


int kn_in_slurp(kn_ctx *ctx, const char *path, int64_t max_bytes, uint8_t **data, int64_t *n, int *gz) {
    *data = NULL;
    *n = 0;
    if (gz) *gz = 0;
    kn_in s;
    int rc = kn_in_open(ctx, &s, path, NULL);
    uint8_t *buf = NULL;
    int64_t cap = 0, got = 0;
    if (rc) goto fail;
    /* the buffer grows with the data actually read (doubling) */
    for (;;) {
        if (got == cap) {
            if (cap > max_bytes) {
                rc = kn_err(ctx, KN_ERR_FORMAT, "%s: more than %lld bytes%s; kiln reads data files of at most that size",
                            path, (long long)max_bytes, s.gz ? " after gunzip" : "");
                goto fail;
            }
            int64_t ncap = cap ? 2 * cap : (int64_t)1 << 16;
            if (ncap > max_bytes + 1) ncap = max_bytes + 1;
            uint8_t *nb = realloc(buf, (size_t)ncap + 1);
            if (!nb) {
                rc = kn_err(ctx, KN_ERR_NOMEM, "%s: out of memory for %lld bytes of data", path, (long long)ncap);
                goto fail;
            }
            buf = nb;
            cap = ncap;
        }
        int64_t r = kn_in_read(ctx, &s, buf + got, cap - got, &rc);
        if (r < 0) goto fail;
        got += r;
        if (got < cap) break;
    }
    if (got > max_bytes) {
        rc = kn_err(ctx, KN_ERR_FORMAT, "%s: more than %lld bytes%s; kiln reads data files of at most that size", path,
                    (long long)max_bytes, s.gz ? " after gunzip" : "");
        goto fail;
    }
    if (s.cut) {
        rc = kn_err(ctx, KN_ERR_FORMAT,
                    "%s: corrupt gzip stream: it ends before its checksum (the file was cut short); fetch it again", path);
        goto fail;
    }
    buf[got] = 0;
    if (gz) *gz = s.gz;
    kn_in_close(&s);
    *data = buf;
    *n = got;
    return KN_OK;
fail:
    kn_in_close(&s);
    free(buf);
    return rc ? rc : KN_ERR_FORMAT;
}
