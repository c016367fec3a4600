/* kiln — safetensors checkpoints. See checkpoint.h and docs/FORMATS.md. */
#define _POSIX_C_SOURCE 200809L
#include "train/checkpoint.h"
#include "train/state.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* ---------------- writing ---------------- */
static int write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static cJSON *shape_json(const kn_shape *s) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < s->nd; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)s->d[i]));
    return a;
}

void kn_fsync_parent(const char *path) {
    char dcopy[4096];
    kn_strlcpy(dcopy, path, sizeof dcopy);
    int dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        if (fsync(dfd) != 0) { /* best effort: some file systems cannot sync a directory */ }
        close(dfd);
    }
}

int kn_ckpt_save(kn_ctx *ctx, const char *path, const kn_store *s, const kn_ckpt_tensor_in *extra, int nextra,
                 const kn_ckpt_meta *meta, int nmeta) {
    int total = s->n + nextra;
    const float **ptrs = calloc((size_t)total + 1, sizeof *ptrs);
    size_t *sizes = calloc((size_t)total + 1, sizeof *sizes);
    cJSON *root = cJSON_CreateObject();
    if (!ptrs || !sizes || !root) {
        free(ptrs); free(sizes); cJSON_Delete(root);
        return kn_err(ctx, KN_ERR_NOMEM, "out of memory writing %s", path);
    }
    /* data CRC first: it goes in the header */
    uLong crc = crc32(0L, Z_NULL, 0);
    size_t off = 0;
    /* "__metadata__" first and "kiln_file_crc32" first in it: the reader finds the
     * whole-file CRC at a fixed place (see KN_FILE_CRC_PREFIX) */
    cJSON *md = cJSON_AddObjectToObject(root, "__metadata__");
    cJSON_AddStringToObject(md, "kiln_file_crc32", "00000000");
    for (int i = 0; i < total; i++) {
        const char *name;
        kn_shape shape;
        const float *data;
        if (i < s->n) {
            const kn_store_entry *e = &s->e[i];
            name = e->name;
            shape = e->shape;
            data = (e->is_state ? s->state : s->param) + e->offset;
        } else {
            name = extra[i - s->n].name;
            shape = extra[i - s->n].shape;
            data = extra[i - s->n].data;
        }
        size_t bytes = (size_t)kn_shape_numel(&shape) * sizeof(float);
        cJSON *t = cJSON_AddObjectToObject(root, name);
        cJSON_AddStringToObject(t, "dtype", "F32");
        cJSON_AddItemToObject(t, "shape", shape_json(&shape));
        cJSON *offs = cJSON_AddArrayToObject(t, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + bytes)));
        ptrs[i] = data;
        sizes[i] = bytes;
        crc = crc32_z(crc, (const Bytef *)data, bytes);
        off += bytes;
    }
    cJSON_AddStringToObject(md, "format", "pt");
    char crcs[32];
    snprintf(crcs, sizeof crcs, "%08lx", (unsigned long)crc);
    cJSON_AddStringToObject(md, "kiln_crc32", crcs);
    cJSON_AddStringToObject(md, "kiln_version", KILN_VERSION);
    for (int i = 0; i < nmeta; i++) cJSON_AddStringToObject(md, meta[i].key, meta[i].value);
    /* one buffer sized from the contents (JSON escapes at most 6 bytes per byte), so the
     * allocations a save makes do not depend on the lengths of the values (test_noalloc
     * counts them: a run of more steps must not make more) */
    size_t est = 4096 + (size_t)total * 400; /* per tensor: keys, dtype, 7 numbers of <= 25 characters */
    for (int i = 0; i < total; i++) est += 6 * strlen(i < s->n ? s->e[i].name : extra[i - s->n].name);
    for (int i = 0; i < nmeta; i++) est += 6 * (strlen(meta[i].key) + strlen(meta[i].value)) + 8;
    char *hdr = malloc(est);
    if (hdr && !cJSON_PrintPreallocated(root, hdr, (int)(est < INT32_MAX ? est : INT32_MAX), 0)) {
        free(hdr); /* the estimate was short (it never is for kiln's own files): let cJSON size it */
        hdr = cJSON_PrintUnformatted(root);
    }
    cJSON_Delete(root);
    if (!hdr) { free(ptrs); free(sizes); return kn_err(ctx, KN_ERR_NOMEM, "out of memory writing %s", path); }
    size_t hl = strlen(hdr), padded = (hl + 7) / 8 * 8;
    /* the whole-file CRC: length, header (its own 8 digits as '0'), padding, data */
    if (strncmp(hdr, KN_FILE_CRC_PREFIX, strlen(KN_FILE_CRC_PREFIX)) != 0) {
        free(hdr); free(ptrs); free(sizes);
        return kn_err(ctx, KN_ERR_INTERNAL, "checkpoint header of %s does not start with the file checksum", path);
    }
    {
        unsigned char l8[8];
        for (int i = 0; i < 8; i++) l8[i] = (unsigned char)((uint64_t)padded >> (8 * i));
        uLong fc = crc32_z(crc32(0L, Z_NULL, 0), l8, 8);
        fc = crc32_z(fc, (const Bytef *)hdr, hl);
        for (size_t i = hl; i < padded; i++) fc = crc32_z(fc, (const Bytef *)" ", 1);
        for (int i = 0; i < total; i++) fc = crc32_z(fc, (const Bytef *)ptrs[i], sizes[i]);
        char fcs[16];
        snprintf(fcs, sizeof fcs, "%08lx", (unsigned long)fc);
        memcpy(hdr + strlen(KN_FILE_CRC_PREFIX), fcs, 8);
    }

    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int rc = KN_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        rc = kn_err(ctx, KN_ERR_IO, "cannot write checkpoint '%s': %s", tmp, strerror(errno));
        goto out;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    int bad = write_all(fd, len8, 8) || write_all(fd, hdr, hl);
    for (size_t i = hl; i < padded && !bad; i++) bad = write_all(fd, " ", 1);
    for (int i = 0; i < total && !bad; i++) bad = write_all(fd, ptrs[i], sizes[i]);
    if (!bad && fsync(fd) != 0) bad = 1;
    int err = errno;
    if (close(fd) != 0 && !bad) { bad = 1; err = errno; }
    if (bad) {
        unlink(tmp);
        rc = kn_err(ctx, KN_ERR_IO, "cannot write checkpoint '%s': %s (earlier checkpoints are untouched)", path,
                    strerror(err));
        goto out;
    }
    if (rename(tmp, path) != 0) {
        err = errno;
        unlink(tmp);
        rc = kn_err(ctx, KN_ERR_IO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(err));
        goto out;
    }
    kn_fsync_parent(path);
out:
    free(hdr);
    free(ptrs);
    free(sizes);
    return rc;
}

/* ---------------- reading ---------------- */
typedef struct {
    char *name;
    kn_shape shape;
    const char *dtype; /* static string */
    size_t esize;
    uint64_t begin, end;
    float *data; /* F32 only: aligned copy */
} ck_tensor;

struct kn_ckpt {
    char *path;
    cJSON *meta;
    ck_tensor *t; /* F32 tensors first (0..n-1), then the others (n..n+nother-1) */
    int n, nother;
    int crc; /* 0 none, 1 data section only (older kiln), 2 whole file */
};

void kn_ckpt_close(kn_ckpt *c) {
    if (!c) return;
    for (int i = 0; i < c->n + c->nother; i++) { free(c->t[i].name); kn_aligned_free(c->t[i].data); }
    free(c->t);
    cJSON_Delete(c->meta);
    free(c->path);
    free(c);
}

/* safetensors dtypes and their element sizes */
static const struct { const char *name; size_t size; } k_dtypes[] = {
    {"F32", 4}, {"F64", 8}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4}, {"I16", 2}, {"I8", 1},
    {"U64", 8}, {"U32", 4}, {"U16", 2}, {"U8", 1}, {"BOOL", 1}, {"F8_E5M2", 1}, {"F8_E4M3", 1}, {NULL, 0}};

/* A JSON number that is an exact integer in [0, max] (JSON numbers are doubles here:
 * max is at most 2^53, where every integer is exact). */
static int json_uint(const cJSON *j, uint64_t max, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return 0;
    double v = j->valuedouble;
    if (!(v >= 0.0) || !(v <= (double)max) || v != floor(v)) return 0; /* NaN fails too */
    *out = (uint64_t)v;
    return 1;
}
#define KN_JSON_INT_MAX ((uint64_t)1 << 53)

static int cmp_begin(const void *a, const void *b) {
    const ck_tensor *x = *(const ck_tensor *const *)a, *y = *(const ck_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}
static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }
static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const ck_tensor *const *)a)->name, (*(const ck_tensor *const *)b)->name);
}

int kn_ckpt_open_mem(kn_ctx *ctx, const char *path, const unsigned char *buf, size_t size, kn_ckpt **out) {
    *out = NULL;
    int rc = KN_OK;
    cJSON *root = NULL;
    ck_tensor **order = NULL;
    kn_ckpt *c = calloc(1, sizeof *c);
    if (!c || !(c->path = strdup(path))) { free(c); return kn_err(ctx, KN_ERR_NOMEM, "out of memory reading %s", path); }
    if (size < 8) {
        rc = kn_err(ctx, KN_ERR_FORMAT, "%s: truncated checkpoint (%zu bytes; a safetensors file starts with an 8-byte header length)", path, size);
        goto out;
    }
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++) hl |= (uint64_t)buf[i] << (8 * i);
    if (hl < 2 || hl > 100000000ULL || hl > size - 8) {
        rc = kn_err(ctx, KN_ERR_FORMAT, "%s: not a safetensors checkpoint or truncated (header length %llu, file size %zu)",
                    path, (unsigned long long)hl, size);
        goto out;
    }
    const char *hdr = (const char *)buf + 8, *end = NULL;
    root = cJSON_ParseWithLengthOpts(hdr, (size_t)hl, &end, 0);
    if (!root || !cJSON_IsObject(root)) {
        rc = kn_err(ctx, KN_ERR_FORMAT, "%s: corrupt checkpoint: the JSON header does not parse", path);
        goto out;
    }
    for (const char *p = end; p < hdr + hl; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            rc = kn_err(ctx, KN_ERR_FORMAT, "%s: corrupt checkpoint: bytes after the JSON header (at header byte %lld; only spaces may pad it)",
                        path, (long long)(p - hdr));
            goto out;
        }
    const unsigned char *data = buf + 8 + hl;
    const uint64_t dsize = (uint64_t)size - 8 - hl;
    int nt = 0;
    for (cJSON *it = root->child; it; it = it->next) nt++;
    c->t = calloc((size_t)nt + 1, sizeof *c->t);
    order = calloc((size_t)nt + 1, sizeof *order);
    if (!c->t || !order) { rc = kn_err(ctx, KN_ERR_NOMEM, "out of memory reading %s", path); goto out; }
    /* metadata: one object of strings */
    for (cJSON *it = root->child; it;) {
        cJSON *next = it->next;
        if (!strcmp(it->string, "__metadata__")) {
            if (c->meta) { rc = kn_err(ctx, KN_ERR_FORMAT, "%s: corrupt checkpoint: two \"__metadata__\" entries", path); goto out; }
            if (!cJSON_IsObject(it)) { rc = kn_err(ctx, KN_ERR_FORMAT, "%s: corrupt checkpoint: \"__metadata__\" is not an object", path); goto out; }
            int nm = 0;
            for (cJSON *m = it->child; m; m = m->next) {
                if (!cJSON_IsString(m)) {
                    rc = kn_err(ctx, KN_ERR_FORMAT, "%s: corrupt checkpoint: metadata '%s' is not a string (safetensors metadata holds strings)", path, m->string);
                    goto out;
                }
                nm++;
            }
            const char **keys = calloc((size_t)nm + 1, sizeof *keys);
            if (!keys) { rc = kn_err(ctx, KN_ERR_NOMEM, "out of memory reading %s", path); goto out; }
            nm = 0;
            for (cJSON *m = it->child; m; m = m->next) keys[nm++] = m->string;
            qsort(keys, (size_t)nm, sizeof *keys, cmp_str); /* duplicates side by side */
            for (int i = 1; i < nm; i++)
                if (!strcmp(keys[i], keys[i - 1])) {
                    rc = kn_err(ctx, KN_ERR_FORMAT, "%s: corrupt checkpoint: metadata '%s' appears twice", path, keys[i]);
                    break;
                }
            free(keys);
            if (rc) goto out;
            c->meta = cJSON_DetachItemViaPointer(root, it);
        }
        it = next;
    }
    /* tensors: every entry checked before any size is trusted */
    int ntens = 0;
    for (cJSON *it = root->child; it; it = it->next) {
        cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
        cJSON *of = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (!cJSON_IsObject(it) || !cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(of) ||
            cJSON_GetArraySize(of) != 2) {
            rc = kn_err(ctx, KN_ERR_FORMAT, "%s: corrupt checkpoint: tensor '%s' has no valid dtype/shape/data_offsets", path, it->string);
            goto out;
        }
        int di = 0;
        while (k_dtypes[di].name && strcmp(k_dtypes[di].name, dt->valuestring) != 0) di++;
        if (!k_dtypes[di].name) {
            rc = kn_err(ctx, KN_ERR_FORMAT, "%s: tensor '%s' has dtype '%.32s', which is not a safetensors dtype", path, it->string, dt->valuestring);
            goto out;
        }
        if (cJSON_GetArraySize(sh) > KN_MAX_DIMS) {
            rc = kn_err(ctx, KN_ERR_FORMAT, "%s: tensor '%s' has %d dimensions; kiln reads tensors of at most %d", path, it->string,
                        cJSON_GetArraySize(sh), KN_MAX_DIMS);
            goto out;
        }
        ck_tensor *t = &c->t[ntens];
        t->dtype = k_dtypes[di].name;
        t->esize = k_dtypes[di].size;
        t->shape.nd = 0;
        int64_t numel = 1;
        int bad = 0;
        for (cJSON *d = sh->child; d; d = d->next) {
            uint64_t v;
            if (!json_uint(d, KN_JSON_INT_MAX, &v)) {
                rc = kn_err(ctx, KN_ERR_FORMAT, "%s: corrupt checkpoint: tensor '%s' has a dimension that is not a whole number from 0 to 2^53 (%.17g)",
                            path, it->string, cJSON_IsNumber(d) ? d->valuedouble : NAN);
                goto out;
            }
            t->shape.d[t->shape.nd++] = (int64_t)v;
            if (kn_mul_ovf(numel, (int64_t)v, &numel)) bad = 1;
        }
        uint64_t b, e, need = 0;
        if (!json_uint(cJSON_GetArrayItem(of, 0), KN_JSON_INT_MAX, &b) || !json_uint(cJSON_GetArrayItem(of, 1), KN_JSON_INT_MAX, &e)) {
            rc = kn_err(ctx, KN_ERR_FORMAT, "%s: corrupt checkpoint: tensor '%s' has data_offsets that are not whole numbers from 0 to 2^53", path, it->string);
            goto out;
        }
        if (!bad) bad = __builtin_mul_overflow((uint64_t)numel, (uint64_t)t->esize, &need);
        if (bad || e < b || e > dsize || e - b != need) {
            char s1[160], s2[32];
            if (bad) snprintf(s2, sizeof s2, "more than 2^64");
            else snprintf(s2, sizeof s2, "%llu", (unsigned long long)need);
            rc = kn_err(ctx, KN_ERR_FORMAT, "%s: corrupt or truncated checkpoint: tensor '%s' (%s, shape %s) needs %s bytes but its data_offsets are %llu..%llu of a %llu-byte data section",
                        path, it->string, t->dtype, kn_shape_str(&t->shape, s1, sizeof s1), s2, (unsigned long long)b,
                        (unsigned long long)e, (unsigned long long)dsize);
            goto out;
        }
        t->begin = b;
        t->end = e;
        if (!(t->name = strdup(it->string))) { rc = kn_err(ctx, KN_ERR_NOMEM, "out of memory reading %s", path); goto out; }
        order[ntens] = t;
        c->n = ++ntens; /* for kn_ckpt_close until they are sorted below */
    }
    /* names are unique */
    qsort(order, (size_t)ntens, sizeof *order, cmp_name);
    for (int i = 1; i < ntens; i++)
        if (!strcmp(order[i]->name, order[i - 1]->name)) {
            rc = kn_err(ctx, KN_ERR_FORMAT, "%s: corrupt checkpoint: tensor '%s' appears twice", path, order[i]->name);
            goto out;
        }
    /* the tensors tile the data section: no gap, no overlap, nothing after the last */
    qsort(order, (size_t)ntens, sizeof *order, cmp_begin);
    uint64_t pos = 0;
    for (int i = 0; i < ntens; i++) {
        if (order[i]->begin != pos) {
            if (order[i]->begin < pos)
                rc = kn_err(ctx, KN_ERR_FORMAT, "%s: corrupt checkpoint: tensors '%s' and '%s' overlap (bytes %llu..%llu and %llu..%llu of the data section)",
                            path, order[i - 1]->name, order[i]->name, (unsigned long long)order[i - 1]->begin,
                            (unsigned long long)order[i - 1]->end, (unsigned long long)order[i]->begin, (unsigned long long)order[i]->end);
            else
                rc = kn_err(ctx, KN_ERR_FORMAT, "%s: corrupt checkpoint: no tensor covers bytes %llu..%llu of the data section (before '%s')",
                            path, (unsigned long long)pos, (unsigned long long)order[i]->begin, order[i]->name);
            goto out;
        }
        pos = order[i]->end;
    }
    if (pos != dsize) {
        rc = kn_err(ctx, KN_ERR_FORMAT, "%s: corrupt checkpoint: %llu data bytes but the tensors cover %llu", path,
                    (unsigned long long)dsize, (unsigned long long)pos);
        goto out;
    }
    /* checksums: the whole file (this kiln), else the data section (older kiln) */
    const char *fcrc = kn_ckpt_meta_get(c, "kiln_file_crc32");
    const char *crcs = kn_ckpt_meta_get(c, "kiln_crc32");
    if (fcrc) {
        size_t pl = strlen(KN_FILE_CRC_PREFIX);
        int hex8 = strlen(fcrc) == 8;
        for (int i = 0; hex8 && i < 8; i++) hex8 = (fcrc[i] >= '0' && fcrc[i] <= '9') || (fcrc[i] >= 'a' && fcrc[i] <= 'f');
        if (!hex8) {
            rc = kn_err(ctx, KN_ERR_FORMAT, "%s: corrupt checkpoint: 'kiln_file_crc32' = '%.16s' is not 8 hex digits", path, fcrc);
            goto out;
        }
        if (hl < pl + 9 || memcmp(hdr, KN_FILE_CRC_PREFIX, pl) != 0 || memcmp(hdr + pl, fcrc, 8) != 0 || hdr[pl + 8] != '"') {
            rc = kn_err(ctx, KN_ERR_FORMAT, "%s: corrupt checkpoint: 'kiln_file_crc32' is not the first metadata entry at the start of the header (the file was rewritten by another tool or damaged)", path);
            goto out;
        }
        uLong fc = crc32_z(crc32(0L, Z_NULL, 0), buf, 8 + pl);
        fc = crc32_z(fc, (const Bytef *)"00000000", 8);
        fc = crc32_z(fc, buf + 8 + pl + 8, size - 8 - pl - 8);
        char got[16];
        snprintf(got, sizeof got, "%08lx", (unsigned long)fc);
        if (strcmp(got, fcrc) != 0) {
            rc = kn_err(ctx, KN_ERR_FORMAT, "%s: checksum mismatch (stored %.16s, computed %s over the whole file): the file is corrupt", path, fcrc, got);
            goto out;
        }
        c->crc = 2;
    } else if (crcs) {
        if (strlen(crcs) != 8) {
            rc = kn_err(ctx, KN_ERR_FORMAT, "%s: corrupt checkpoint: 'kiln_crc32' = '%.16s' is not 8 hex digits", path, crcs);
            goto out;
        }
        uLong crc = crc32_z(crc32(0L, Z_NULL, 0), data, (size_t)dsize);
        char got[16];
        snprintf(got, sizeof got, "%08lx", (unsigned long)crc);
        if (strcmp(got, crcs) != 0) {
            rc = kn_err(ctx, KN_ERR_FORMAT, "%s: checksum mismatch (stored %.16s, computed %s): the file is corrupt", path, crcs, got);
            goto out;
        }
        c->crc = 1;
    }
    /* F32 tensors first, in header order; the others after them */
    {
        ck_tensor *sorted = calloc((size_t)ntens + 1, sizeof *sorted);
        if (!sorted) { rc = kn_err(ctx, KN_ERR_NOMEM, "out of memory reading %s", path); goto out; }
        int k = 0;
        for (int pass = 0; pass < 2; pass++)
            for (int i = 0; i < ntens; i++)
                if ((strcmp(c->t[i].dtype, "F32") == 0) == (pass == 0)) sorted[k++] = c->t[i];
        free(c->t);
        c->t = sorted;
        c->nother = 0;
        c->n = 0;
        for (int i = 0; i < ntens; i++) {
            if (strcmp(c->t[i].dtype, "F32") == 0) c->n++;
            else c->nother++;
        }
    }
    for (int i = 0; i < c->n; i++) {
        ck_tensor *t = &c->t[i];
        size_t need = (size_t)(t->end - t->begin);
        t->data = kn_aligned_alloc(need);
        if (!t->data) { rc = kn_err(ctx, KN_ERR_NOMEM, "%s: out of memory for tensor '%s' (%zu bytes)", path, t->name, need); goto out; }
        memcpy(t->data, data + t->begin, need);
    }
out:
    free(order);
    cJSON_Delete(root);
    if (rc) kn_ckpt_close(c);
    else *out = c;
    return rc;
}

int kn_ckpt_open(kn_ctx *ctx, const char *path, kn_ckpt **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return kn_err(ctx, KN_ERR_IO, "cannot open checkpoint '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return kn_err(ctx, KN_ERR_IO, "cannot read checkpoint '%s': not a regular file", path);
    }
    size_t size = (size_t)st.st_size;
    unsigned char *buf = malloc(size ? size : 1);
    if (!buf) { fclose(f); return kn_err(ctx, KN_ERR_NOMEM, "out of memory reading %s (%zu bytes)", path, size); }
    size_t got = fread(buf, 1, size, f);
    int err = ferror(f) ? errno : 0;
    fclose(f);
    if (got != size) {
        free(buf);
        return kn_err(ctx, KN_ERR_IO, "%s: cannot read the file (%zu of %zu bytes%s%s)", path, got, size, err ? ": " : "",
                      err ? strerror(err) : "");
    }
    int rc = kn_ckpt_open_mem(ctx, path, buf, size, out);
    free(buf);
    return rc;
}

const char *kn_ckpt_meta_get(const kn_ckpt *c, const char *key) {
    if (!c->meta) return NULL;
    cJSON *v = cJSON_GetObjectItemCaseSensitive(c->meta, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int kn_ckpt_checksum(const kn_ckpt *c) { return c->crc; }
int kn_ckpt_count(const kn_ckpt *c) { return c->n; }
const char *kn_ckpt_name(const kn_ckpt *c, int i) { return c->t[i].name; }
int kn_ckpt_other_count(const kn_ckpt *c) { return c->nother; }
const char *kn_ckpt_other(const kn_ckpt *c, int i, const char **dtype, kn_shape *shape) {
    const ck_tensor *t = &c->t[c->n + i];
    if (dtype) *dtype = t->dtype;
    if (shape) *shape = t->shape;
    return t->name;
}

int kn_ckpt_get(kn_ctx *ctx, const kn_ckpt *c, const char *name, const float **data, kn_shape *shape) {
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->t[i].name, name)) {
            *data = c->t[i].data;
            if (shape) *shape = c->t[i].shape;
            return KN_OK;
        }
    for (int i = c->n; i < c->n + c->nother; i++)
        if (!strcmp(c->t[i].name, name))
            return kn_err(ctx, KN_ERR_FORMAT, "%s: tensor '%s' has dtype %s; kiln reads F32 tensors (convert it, e.g. with tensor.float() in PyTorch)",
                          c->path, name, c->t[i].dtype);
    return kn_err(ctx, KN_ERR_FORMAT, "%s: no tensor '%s' in the checkpoint (is it from a different model?)", c->path, name);
}

int kn_ckpt_load_store(kn_ctx *ctx, const kn_ckpt *c, kn_store *s) {
    for (int i = 0; i < s->n; i++) {
        const kn_store_entry *e = &s->e[i];
        const float *d;
        kn_shape sh;
        int rc = kn_ckpt_get(ctx, c, e->name, &d, &sh);
        if (rc) return rc;
        if (!kn_shape_eq(&sh, &e->shape)) {
            char a[160], b[160];
            return kn_err(ctx, KN_ERR_SHAPE, "%s: tensor '%s' has shape %s in the checkpoint but the model needs %s (a checkpoint from a different model?)",
                          c->path, e->name, kn_shape_str(&sh, a, sizeof a), kn_shape_str(&e->shape, b, sizeof b));
        }
        memcpy(kn_store_data(s, e), d, (size_t)e->numel * sizeof(float));
    }
    return KN_OK;
}

static int has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

int kn_ckpt_load_init(kn_ctx *ctx, const kn_ckpt *c, kn_store *s) {
    int rc = kn_ckpt_load_store(ctx, c, s);
    if (rc) return rc;
    /* every other tensor must be one kiln knows it can leave out */
    char list[1024];
    size_t k = 0;
    int nbad = 0;
    for (int i = 0; i < c->n + c->nother; i++) {
        const ck_tensor *t = &c->t[i];
        if (kn_store_find(s, t->name)) continue;
        if (!strncmp(t->name, "optimizer.m.", 12) || !strncmp(t->name, "optimizer.v.", 12)) continue; /* kiln's optimizer state */
        if (has_suffix(t->name, ".num_batches_tracked") && t->shape.nd <= 1 && kn_shape_numel(&t->shape) == 1 &&
            (t->dtype[0] == 'I' || t->dtype[0] == 'U'))
            continue; /* PyTorch BatchNorm's step counter: kiln's BatchNorm uses a fixed momentum */
        if (nbad < 8 && k < sizeof list) {
            char sh[160];
            k += (size_t)snprintf(list + k, sizeof list - k, "%s'%s' (%s %s)", nbad ? ", " : "", t->name, t->dtype,
                                  kn_shape_str(&t->shape, sh, sizeof sh));
        }
        nbad++;
    }
    if (nbad)
        return kn_err(ctx, KN_ERR_FORMAT, "%s: %d tensor%s in the file %s not used by this model: %s%s. Remove %s from the file (or fix the model's layer names) and try again",
                      c->path, nbad, nbad == 1 ? "" : "s", nbad == 1 ? "is" : "are", list, nbad > 8 ? ", ..." : "",
                      nbad == 1 ? "it" : "them");
    return KN_OK;
}

/* ---------------- metadata ---------------- */
/* The ranges of kiln's own keys are those of the training checkpoint's field table
 * (kn_ckpt_fields, state.c); a key it does not know gets these. */
#define P53 ((int64_t)1 << 53)
static const kn_state_field k_default_int = {NULL, KN_FIELD_I64, 0, 0, 0, P53, 0, 0, 0};
static const kn_state_field k_default_num = {NULL, KN_FIELD_F64, 0, 0, 0, 0, -1.7976931348623157e308, 1.7976931348623157e308, 0};

static int meta_str(kn_ctx *ctx, const kn_ckpt *c, const char *key, const char **out) {
    const char *s = kn_ckpt_meta_get(c, key);
    if (!s || !*s) return kn_err(ctx, KN_ERR_FORMAT, "%s: metadata '%s' is missing (not a kiln training checkpoint?)", c->path, key);
    *out = s;
    return KN_OK;
}

int kn_ckpt_meta_i64(kn_ctx *ctx, const kn_ckpt *c, const char *key, int64_t min, int64_t max, int64_t *out) {
    const char *s = NULL;
    int rc = meta_str(ctx, c, key, &s);
    if (rc) return rc;
    const char *p = s + (*s == '-');
    int ok = *p >= '0' && *p <= '9';
    for (const char *q = p; ok && *q; q++) ok = *q >= '0' && *q <= '9';
    if (!ok) return kn_err(ctx, KN_ERR_FORMAT, "%s: metadata '%s' = '%.64s' is not an integer: the checkpoint is damaged", c->path, key, s);
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno == ERANGE || v < min || v > max)
        return kn_err(ctx, KN_ERR_FORMAT, "%s: metadata '%s' = '%.64s' is out of range (%lld to %lld): the checkpoint is damaged",
                      c->path, key, s, (long long)min, (long long)max);
    *out = (int64_t)v;
    return KN_OK;
}

int kn_ckpt_meta_u64(kn_ctx *ctx, const kn_ckpt *c, const char *key, uint64_t max, uint64_t *out) {
    const char *s = NULL;
    int rc = meta_str(ctx, c, key, &s);
    if (rc) return rc;
    int ok = 1;
    for (const char *q = s; ok && *q; q++) ok = *q >= '0' && *q <= '9';
    if (!ok) return kn_err(ctx, KN_ERR_FORMAT, "%s: metadata '%s' = '%.64s' is not a non-negative integer: the checkpoint is damaged", c->path, key, s);
    errno = 0;
    unsigned long long v = strtoull(s, NULL, 10);
    if (errno == ERANGE || v > max)
        return kn_err(ctx, KN_ERR_FORMAT, "%s: metadata '%s' = '%.64s' is out of range (0 to %llu): the checkpoint is damaged", c->path,
                      key, s, (unsigned long long)max);
    *out = (uint64_t)v;
    return KN_OK;
}

static int meta_f64(kn_ctx *ctx, const kn_ckpt *c, const char *key, double min, double max, int nan_ok, double *out) {
    const char *s = NULL;
    int rc = meta_str(ctx, c, key, &s);
    if (rc) return rc;
    char *end;
    double v = strtod(s, &end);
    if (*s == ' ' || *s == '\t' || *s == '\n' || *end)
        return kn_err(ctx, KN_ERR_FORMAT, "%s: metadata '%s' = '%.64s' is not a number: the checkpoint is damaged", c->path, key, s);
    if (!(isnan(v) && nan_ok) && !(v >= min && v <= max))
        return kn_err(ctx, KN_ERR_FORMAT, "%s: metadata '%s' = '%.64s' is out of range (%g to %g): the checkpoint is damaged", c->path,
                      key, s, min, max);
    *out = v;
    return KN_OK;
}

int kn_ckpt_meta_f64(kn_ctx *ctx, const kn_ckpt *c, const char *key, double min, double max, double *out) {
    return meta_f64(ctx, c, key, min, max, 0, out);
}

int kn_ckpt_meta_int(kn_ctx *ctx, const kn_ckpt *c, const char *key, int64_t *out) {
    const kn_state_field *r = kn_ckpt_field(key);
    if (!r || r->type != KN_FIELD_I64) r = &k_default_int;
    return kn_ckpt_meta_i64(ctx, c, key, r->imin, r->imax, out);
}

int kn_ckpt_meta_num(kn_ctx *ctx, const kn_ckpt *c, const char *key, double *out) {
    const kn_state_field *r = kn_ckpt_field(key);
    if (!r || r->type != KN_FIELD_F64) r = &k_default_num;
    return meta_f64(ctx, c, key, r->fmin, r->fmax, (r->flags & KN_FIELD_NAN_OK) != 0, out);
}

int kn_ckpt_check_train_meta(kn_ctx *ctx, const kn_ckpt *c) {
    const char *kind = kn_ckpt_meta_get(c, "kind");
    if (!kind || strcmp(kind, "train") != 0 || !kn_ckpt_meta_get(c, "config"))
        return kn_err(ctx, KN_ERR_FORMAT, "%s: not a kiln training checkpoint (no training state in its metadata)", c->path);
    for (const kn_state_field *r = kn_ckpt_fields; r->key; r++) {
        if (!(r->flags & (KN_FIELD_RESTORE | KN_FIELD_CHECK))) continue;
        if (!(r->flags & KN_FIELD_RESTORE) && !kn_ckpt_meta_get(c, r->key)) continue;
        int64_t iv = 0;
        double fv = 0;
        uint64_t uv = 0;
        int rc = r->type == KN_FIELD_F64 ? meta_f64(ctx, c, r->key, r->fmin, r->fmax, (r->flags & KN_FIELD_NAN_OK) != 0, &fv)
                 : r->type == KN_FIELD_U64 ? kn_ckpt_meta_u64(ctx, c, r->key, r->umax, &uv)
                                           : kn_ckpt_meta_i64(ctx, c, r->key, r->imin, r->imax, &iv);
        if (rc) return rc;
    }
    return KN_OK;
}
