/* kiln — safetensors checkpoints. See checkpoint.h and docs/FORMATS.md. */
#define _POSIX_C_SOURCE 200809L
#include "train/checkpoint.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
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
    cJSON *md = cJSON_AddObjectToObject(root, "__metadata__");
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
        crc = crc32(crc, (const Bytef *)data, (uInt)bytes);
        off += bytes;
    }
    cJSON_AddStringToObject(md, "format", "pt");
    char crcs[32];
    snprintf(crcs, sizeof crcs, "%08lx", (unsigned long)crc);
    cJSON_AddStringToObject(md, "kiln_crc32", crcs);
    cJSON_AddStringToObject(md, "kiln_version", KILN_VERSION);
    for (int i = 0; i < nmeta; i++) cJSON_AddStringToObject(md, meta[i].key, meta[i].value);
    char *hdr = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!hdr) { free(ptrs); free(sizes); return kn_err(ctx, KN_ERR_NOMEM, "out of memory writing %s", path); }
    size_t hl = strlen(hdr), padded = (hl + 7) / 8 * 8;

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
    {
        char dcopy[4096];
        kn_strlcpy(dcopy, path, sizeof dcopy);
        int dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY);
        if (dfd >= 0) { fsync(dfd); close(dfd); }
    }
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
    float *data;
} ck_tensor;

struct kn_ckpt {
    char *path;
    cJSON *meta;
    ck_tensor *t;
    int n;
};

void kn_ckpt_close(kn_ckpt *c) {
    if (!c) return;
    for (int i = 0; i < c->n; i++) { free(c->t[i].name); kn_aligned_free(c->t[i].data); }
    free(c->t);
    cJSON_Delete(c->meta);
    free(c->path);
    free(c);
}

int kn_ckpt_open(kn_ctx *ctx, const char *path, kn_ckpt **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return kn_err(ctx, KN_ERR_IO, "cannot open checkpoint '%s': %s", path, strerror(errno));
    int rc = KN_OK;
    char *hdr = NULL;
    unsigned char *data = NULL;
    cJSON *root = NULL;
    kn_ckpt *c = calloc(1, sizeof *c);
    struct stat st;
    if (!c || fstat(fileno(f), &st) != 0) { rc = kn_err(ctx, KN_ERR_IO, "cannot read '%s'", path); goto out; }
    c->path = strdup(path);
    unsigned char len8[8];
    if (fread(len8, 1, 8, f) != 8) {
        rc = kn_err(ctx, KN_ERR_FORMAT, "%s: truncated checkpoint (%lld bytes; a safetensors file starts with an 8-byte header length)", path, (long long)st.st_size);
        goto out;
    }
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++) hl |= (uint64_t)len8[i] << (8 * i);
    if (hl < 2 || hl > 100000000ULL || 8 + hl > (uint64_t)st.st_size) {
        rc = kn_err(ctx, KN_ERR_FORMAT, "%s: not a safetensors checkpoint or truncated (header length %llu, file size %lld)",
                    path, (unsigned long long)hl, (long long)st.st_size);
        goto out;
    }
    hdr = malloc(hl + 1);
    if (!hdr || fread(hdr, 1, hl, f) != hl) { rc = kn_err(ctx, KN_ERR_FORMAT, "%s: truncated header", path); goto out; }
    hdr[hl] = 0;
    root = cJSON_Parse(hdr);
    if (!root || !cJSON_IsObject(root)) {
        rc = kn_err(ctx, KN_ERR_FORMAT, "%s: corrupt checkpoint: the JSON header does not parse", path);
        goto out;
    }
    uint64_t dsize = (uint64_t)st.st_size - 8 - hl;
    data = malloc(dsize ? dsize : 1);
    if (!data || fread(data, 1, dsize, f) != dsize) { rc = kn_err(ctx, KN_ERR_IO, "%s: cannot read the data section", path); goto out; }
    int nt = cJSON_GetArraySize(root);
    c->t = calloc((size_t)nt + 1, sizeof *c->t);
    if (!c->t) { rc = kn_err(ctx, KN_ERR_NOMEM, "out of memory"); goto out; }
    uint64_t maxend = 0;
    for (cJSON *it = root->child; it; it = it->next) {
        if (!strcmp(it->string, "__metadata__")) {
            c->meta = cJSON_DetachItemViaPointer(root, it);
            break;
        }
    }
    for (cJSON *it = root->child; it; it = it->next) {
        cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
        cJSON *of = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2 ||
            cJSON_GetArraySize(sh) > KN_MAX_DIMS) {
            rc = kn_err(ctx, KN_ERR_FORMAT, "%s: corrupt checkpoint: tensor '%s' has no valid dtype/shape/data_offsets", path, it->string);
            goto out;
        }
        if (strcmp(dt->valuestring, "F32") != 0) {
            rc = kn_err(ctx, KN_ERR_FORMAT, "%s: tensor '%s' has dtype %s; kiln reads F32 tensors", path, it->string, dt->valuestring);
            goto out;
        }
        kn_shape s = {0, {0}};
        for (cJSON *d = sh->child; d; d = d->next) s.d[s.nd++] = (int64_t)d->valuedouble;
        double b = cJSON_GetArrayItem(of, 0)->valuedouble, e = cJSON_GetArrayItem(of, 1)->valuedouble;
        uint64_t need = (uint64_t)kn_shape_numel(&s) * 4;
        if (b < 0 || e < b || (uint64_t)e > dsize || (uint64_t)(e - b) != need) {
            rc = kn_err(ctx, KN_ERR_FORMAT, "%s: corrupt or truncated checkpoint: tensor '%s' needs bytes %.0f..%.0f but the data section has %llu",
                        path, it->string, b, e, (unsigned long long)dsize);
            goto out;
        }
        if ((uint64_t)e > maxend) maxend = (uint64_t)e;
        ck_tensor *t = &c->t[c->n++];
        t->name = strdup(it->string);
        t->shape = s;
        t->data = kn_aligned_alloc(need);
        if (!t->name || !t->data) { rc = kn_err(ctx, KN_ERR_NOMEM, "out of memory"); goto out; }
        memcpy(t->data, data + (uint64_t)b, need);
    }
    if (maxend != dsize) {
        rc = kn_err(ctx, KN_ERR_FORMAT, "%s: corrupt checkpoint: %llu data bytes but tensors cover %llu", path,
                    (unsigned long long)dsize, (unsigned long long)maxend);
        goto out;
    }
    const char *crcs = kn_ckpt_meta_get(c, "kiln_crc32");
    if (crcs) {
        uLong crc = crc32(0L, Z_NULL, 0);
        crc = crc32(crc, data, (uInt)dsize);
        char got[32];
        snprintf(got, sizeof got, "%08lx", (unsigned long)crc);
        if (strcmp(got, crcs) != 0) {
            rc = kn_err(ctx, KN_ERR_FORMAT, "%s: checksum mismatch (stored %s, computed %s): the file is corrupt", path, crcs, got);
            goto out;
        }
    }
out:
    fclose(f);
    free(hdr);
    free(data);
    cJSON_Delete(root);
    if (rc) kn_ckpt_close(c);
    else *out = c;
    return rc;
}

const char *kn_ckpt_meta_get(const kn_ckpt *c, const char *key) {
    if (!c->meta) return NULL;
    cJSON *v = cJSON_GetObjectItemCaseSensitive(c->meta, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int kn_ckpt_count(const kn_ckpt *c) { return c->n; }
const char *kn_ckpt_name(const kn_ckpt *c, int i) { return c->t[i].name; }

int kn_ckpt_get(kn_ctx *ctx, const kn_ckpt *c, const char *name, const float **data, kn_shape *shape) {
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->t[i].name, name)) {
            *data = c->t[i].data;
            if (shape) *shape = c->t[i].shape;
            return KN_OK;
        }
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
            char a[64], b[64];
            return kn_err(ctx, KN_ERR_SHAPE, "%s: tensor '%s' has shape %s in the checkpoint but the model needs %s (a checkpoint from a different model?)",
                          c->path, e->name, kn_shape_str(&sh, a, sizeof a), kn_shape_str(&e->shape, b, sizeof b));
        }
        memcpy(kn_store_data(s, e), d, (size_t)e->numel * sizeof(float));
    }
    return KN_OK;
}
