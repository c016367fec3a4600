/* kiln — NumPy .npy files (format 1.0, 2.0, 3.0): the magic, a little-endian header
 * length, a Python dict literal {'descr': ..., 'fortran_order': ..., 'shape': (...)}
 * padded with blanks to a multiple of 16 or 64 bytes and ended by '\n', then the raw
 * data. Read strictly: every key once, nothing else, the data exactly what the shape
 * says. gzip-compressed files (.npy.gz) are read too. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/input.h"
#include "data/source.h"

typedef struct {
    const char *p, *end, *start, *path;
    kn_ctx *ctx;
} npy_parse;

static void skip_ws(npy_parse *q) {
    while (q->p < q->end && (*q->p == ' ' || *q->p == '\t' || *q->p == '\n' || *q->p == '\r')) q->p++;
}

static int npy_fail(npy_parse *q, const char *what) {
    char near[24];
    size_t k = 0;
    for (const char *c = q->p; c < q->end && k < 16; c++) near[k++] = (*c >= 32 && *c < 127) ? *c : '?';
    near[k] = 0;
    return kn_err(q->ctx, KN_ERR_FORMAT,
                  "%s: bad .npy header: expected %s at byte %lld of the header dict, found '%s'; the file is not a "
                  "valid .npy file (write it with numpy.save)",
                  q->path, what, (long long)(q->p - q->start), k ? near : "(end of header)");
}

/* a quoted Python string without escapes, into buf */
static int parse_str(npy_parse *q, char *buf, size_t n) {
    skip_ws(q);
    if (q->p >= q->end || (*q->p != '\'' && *q->p != '"')) return npy_fail(q, "a quoted string");
    char quote = *q->p++;
    size_t k = 0;
    while (q->p < q->end && *q->p != quote) {
        if (*q->p == '\\' || k + 1 >= n) return npy_fail(q, "a short string without escapes");
        buf[k++] = *q->p++;
    }
    if (q->p >= q->end) return npy_fail(q, "the end of a quoted string");
    q->p++;
    buf[k] = 0;
    return KN_OK;
}

static int expect_ch(npy_parse *q, char c, const char *what) {
    skip_ws(q);
    if (q->p >= q->end || *q->p != c) return npy_fail(q, what);
    q->p++;
    return KN_OK;
}

static int parse_header(npy_parse *q, char *descr, size_t ndescr, int *fortran, int *nd, int64_t *dims) {
    int have_d = 0, have_f = 0, have_s = 0, rc;
    if ((rc = expect_ch(q, '{', "'{'"))) return rc;
    for (;;) {
        skip_ws(q);
        if (q->p < q->end && *q->p == '}') { q->p++; break; }
        char key[32];
        if ((rc = parse_str(q, key, sizeof key))) return rc;
        if ((rc = expect_ch(q, ':', "':' after a key"))) return rc;
        if (!strcmp(key, "descr")) {
            if (have_d++) return kn_err(q->ctx, KN_ERR_FORMAT, "%s: bad .npy header: key 'descr' given twice", q->path);
            skip_ws(q);
            if (q->p < q->end && *q->p == '[')
                return kn_err(q->ctx, KN_ERR_FORMAT,
                              "%s: .npy file of a structured dtype (a list of fields); kiln reads plain numeric arrays "
                              "(float32, float64, int32, int64, uint8): save one array per field",
                              q->path);
            if ((rc = parse_str(q, descr, ndescr))) return rc;
        } else if (!strcmp(key, "fortran_order")) {
            if (have_f++) return kn_err(q->ctx, KN_ERR_FORMAT, "%s: bad .npy header: key 'fortran_order' given twice", q->path);
            skip_ws(q);
            if (q->end - q->p >= 4 && !memcmp(q->p, "True", 4)) { *fortran = 1; q->p += 4; }
            else if (q->end - q->p >= 5 && !memcmp(q->p, "False", 5)) { *fortran = 0; q->p += 5; }
            else return npy_fail(q, "True or False for 'fortran_order'");
        } else if (!strcmp(key, "shape")) {
            if (have_s++) return kn_err(q->ctx, KN_ERR_FORMAT, "%s: bad .npy header: key 'shape' given twice", q->path);
            if ((rc = expect_ch(q, '(', "'(' starting the shape tuple"))) return rc;
            *nd = 0;
            for (;;) {
                skip_ws(q);
                if (q->p < q->end && *q->p == ')') { q->p++; break; }
                if (q->p >= q->end || *q->p < '0' || *q->p > '9') return npy_fail(q, "a dimension (a non-negative integer)");
                int64_t v = 0;
                while (q->p < q->end && *q->p >= '0' && *q->p <= '9') {
                    if (kn_mul_ovf(v, 10, &v) || kn_add_ovf(v, *q->p - '0', &v))
                        return kn_err(q->ctx, KN_ERR_FORMAT, "%s: .npy shape has a dimension too large for 64 bits", q->path);
                    q->p++;
                }
                if (*nd >= KN_MAX_DIMS)
                    return kn_err(q->ctx, KN_ERR_FORMAT, "%s: .npy array has more than %d dimensions; kiln reads 1 to %d",
                                  q->path, KN_MAX_DIMS, KN_MAX_DIMS);
                dims[(*nd)++] = v;
                skip_ws(q);
                if (q->p < q->end && *q->p == ',') { q->p++; continue; }
                if ((rc = expect_ch(q, ')', "',' or ')' in the shape tuple"))) return rc;
                break;
            }
        } else {
            return kn_err(q->ctx, KN_ERR_FORMAT,
                          "%s: bad .npy header: unknown key '%s' (a .npy header has 'descr', 'fortran_order' and 'shape')",
                          q->path, key);
        }
        skip_ws(q);
        if (q->p < q->end && *q->p == ',') { q->p++; continue; }
        if ((rc = expect_ch(q, '}', "',' or '}' after a value"))) return rc;
        break;
    }
    skip_ws(q);
    if (q->p != q->end) return npy_fail(q, "the end of the header after '}'");
    if (!have_d || !have_f || !have_s)
        return kn_err(q->ctx, KN_ERR_FORMAT, "%s: bad .npy header: key '%s' is missing", q->path,
                      !have_d ? "descr" : !have_f ? "fortran_order" : "shape");
    return KN_OK;
}

int kn_npy_read(kn_ctx *ctx, const char *path, kn_array *out) {
    memset(out, 0, sizeof *out);
    uint8_t *buf = NULL;
    int64_t len = 0;
    int rc = kn_in_slurp(ctx, path, KN_DATA_MAX_BYTES + ((int64_t)1 << 20), &buf, &len, NULL);
    if (rc) return rc;
    static const uint8_t magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
    if (len < 10 || memcmp(buf, magic, 6) != 0) {
        rc = kn_err(ctx, KN_ERR_FORMAT, "%s: not a .npy file: it does not start with the magic \\x93NUMPY%s", path,
                    len < 10 ? " (the file is shorter than a .npy header)" : "");
        goto fail;
    }
    int major = buf[6], minor = buf[7];
    int64_t hlen, hstart;
    if (major == 1) {
        hlen = buf[8] | (int64_t)buf[9] << 8;
        hstart = 10;
    } else if (major == 2 || major == 3) {
        if (len < 12) {
            rc = kn_err(ctx, KN_ERR_FORMAT, "%s: truncated .npy file: %lld bytes, shorter than its header", path, (long long)len);
            goto fail;
        }
        hlen = buf[8] | (int64_t)buf[9] << 8 | (int64_t)buf[10] << 16 | (int64_t)buf[11] << 24;
        hstart = 12;
    } else {
        rc = kn_err(ctx, KN_ERR_FORMAT, "%s: .npy format version %d.%d; kiln reads versions 1.0, 2.0 and 3.0", path, major,
                    minor);
        goto fail;
    }
    if (minor != 0) {
        rc = kn_err(ctx, KN_ERR_FORMAT, "%s: .npy format version %d.%d; kiln reads versions 1.0, 2.0 and 3.0", path, major,
                    minor);
        goto fail;
    }
    if (hlen > len - hstart) {
        rc = kn_err(ctx, KN_ERR_FORMAT, "%s: truncated .npy file: the header says %lld bytes, the file has %lld after the preamble",
                    path, (long long)hlen, (long long)(len - hstart));
        goto fail;
    }
    char descr[32] = "";
    int fortran = 0, nd = 0;
    int64_t dims[KN_MAX_DIMS] = {0};
    npy_parse q = {(const char *)buf + hstart, (const char *)buf + hstart + hlen, (const char *)buf + hstart, path, ctx};
    if ((rc = parse_header(&q, descr, sizeof descr, &fortran, &nd, dims))) goto fail;
    static const struct { const char *d; kn_eltype t; } types[] = {
        {"<f4", KN_EL_F32}, {"<f8", KN_EL_F64}, {"<i4", KN_EL_I32}, {"<i8", KN_EL_I64}, {"|u1", KN_EL_U8}, {"<u1", KN_EL_U8}, {"u1", KN_EL_U8},
    };
    int ti = -1;
    for (int i = 0; i < (int)(sizeof types / sizeof types[0]); i++)
        if (!strcmp(descr, types[i].d)) ti = i;
    if (ti < 0) {
        rc = kn_err(ctx, KN_ERR_FORMAT,
                    "%s: .npy dtype '%s' is not supported; kiln reads '<f4' (float32), '<f8' (float64), '<i4' (int32), "
                    "'<i8' (int64) and '|u1' (uint8), little-endian%s",
                    path, descr, descr[0] == '>' ? ": this array is big-endian, save a.astype(a.dtype.newbyteorder('<'))" :
                                 ": convert it with a.astype(numpy.float32)");
        goto fail;
    }
    if (fortran) {
        rc = kn_err(ctx, KN_ERR_FORMAT,
                    "%s: .npy array is stored in Fortran (column-major) order (fortran_order: True); kiln reads C order: "
                    "save numpy.ascontiguousarray(a)",
                    path);
        goto fail;
    }
    if (nd == 0) {
        rc = kn_err(ctx, KN_ERR_FORMAT, "%s: .npy array has shape () (a single number); kiln reads arrays of 1 to %d dimensions whose first is the samples",
                    path, KN_MAX_DIMS);
        goto fail;
    }
    const kn_eltype t = types[ti].t;
    const int64_t es = (int64_t)kn_eltype_size(t);
    int64_t numel = 1, bytes;
    for (int i = 0; i < nd; i++) {
        if (dims[i] == 0) {
            rc = kn_err(ctx, KN_ERR_FORMAT, "%s: .npy array is empty (dimension %d is 0); kiln needs at least one sample and element",
                        path, i);
            goto fail;
        }
        if (kn_mul_ovf(numel, dims[i], &numel) || kn_mul_ovf(numel, es, &bytes) || bytes > KN_DATA_MAX_BYTES) {
            rc = kn_err(ctx, KN_ERR_FORMAT, "%s: .npy shape is larger than kiln reads (2^34 bytes of data)", path);
            goto fail;
        }
    }
    bytes = numel * es;
    const int64_t have = len - hstart - hlen;
    if (have != bytes) {
        char sh[160];
        kn_shape s = {nd, {0}};
        memcpy(s.d, dims, sizeof(int64_t) * (size_t)nd);
        rc = kn_err(ctx, KN_ERR_FORMAT, "%s: .npy data is %lld bytes, but shape %s of %s needs %lld%s", path, (long long)have,
                    kn_shape_str(&s, sh, sizeof sh), kn_eltype_name(t), (long long)bytes,
                    have < bytes ? " (the file was cut short)" : " (extra bytes after the data: is this the right file?)");
        goto fail;
    }
    memmove(buf, buf + hstart + hlen, (size_t)bytes);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    for (int64_t i = 0; i < numel && es > 1; i++)
        for (int a = 0, b = (int)es - 1; a < b; a++, b--) {
            uint8_t x = buf[i * es + a];
            buf[i * es + a] = buf[i * es + b];
            buf[i * es + b] = x;
        }
#endif
    uint8_t *shrunk = realloc(buf, (size_t)bytes);
    out->type = t;
    out->nd = nd;
    memcpy(out->dims, dims, sizeof dims);
    out->numel = numel;
    out->data = shrunk ? shrunk : buf;
    return KN_OK;
fail:
    free(buf);
    return rc;
}

int kn_npy_write(kn_ctx *ctx, const char *path, const kn_array *a) {
    const char *descr;
    switch (a->type) {
    case KN_EL_F32: descr = "<f4"; break;
    case KN_EL_F64: descr = "<f8"; break;
    case KN_EL_I32: descr = "<i4"; break;
    case KN_EL_I64: descr = "<i8"; break;
    case KN_EL_U8: descr = "|u1"; break;
    default: return kn_err(ctx, KN_ERR_INVALID, "%s: cannot write a .npy file of %s", path, kn_eltype_name(a->type));
    }
    if (a->nd < 1 || a->nd > KN_MAX_DIMS || !a->data)
        return kn_err(ctx, KN_ERR_INVALID, "%s: cannot write a .npy file of %d dimensions", path, a->nd);
    char h[256];
    int k = snprintf(h, sizeof h, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    int64_t numel = 1;
    for (int i = 0; i < a->nd; i++) {
        k += snprintf(h + k, sizeof h - (size_t)k, a->nd == 1 ? "%lld," : (i ? ", %lld" : "%lld"), (long long)a->dims[i]);
        if (a->dims[i] < 1 || kn_mul_ovf(numel, a->dims[i], &numel))
            return kn_err(ctx, KN_ERR_INVALID, "%s: bad dimension %d for a .npy file", path, i);
    }
    k += snprintf(h + k, sizeof h - (size_t)k, "), }");
    int total = 10 + k + 1;
    int pad = (64 - total % 64) % 64;
    uint8_t pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)((k + pad + 1) & 0xff), (uint8_t)((k + pad + 1) >> 8)};
    FILE *f = fopen(path, "wb");
    if (!f) return kn_err(ctx, KN_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    int ok = fwrite(pre, 1, 10, f) == 10 && fwrite(h, 1, (size_t)k, f) == (size_t)k;
    for (int i = 0; ok && i < pad; i++) ok = fputc(' ', f) != EOF;
    ok = ok && fputc('\n', f) != EOF;
    size_t bytes = (size_t)numel * kn_eltype_size(a->type);
    ok = ok && fwrite(a->data, 1, bytes, f) == bytes;
    int e = errno;
    if (fclose(f) != 0 && ok) { ok = 0; e = errno; }
    if (!ok) return kn_err(ctx, KN_ERR_IO, "%s: write failed: %s", path, strerror(e));
    return KN_OK;
}
