/* kiln — config files: INI-style model/run descriptions read with inih.
 *
 * A config is a list of sections in file order; each holds key = value pairs with
 * the line they came from. Reserved sections: [data] [train] [optimizer] [model].
 * Every other section is a layer (its name is the layer name, `type = ...` says
 * which layer). `--set section.key=value` overrides or adds a key.
 *
 * Getters report errors as  "FILE:LINE: [section] key = 'value': expected ..."
 * and mark keys as used; kn_cfg_check_keys reports keys a reader did not expect. */
#ifndef KN_CONFIG_H
#define KN_CONFIG_H

#include "core/core.h"

typedef struct {
    char *key;
    char *value;
    int line;     /* 1-based line in the file; 0 when it came from --set */
} kn_cfg_kv;

typedef struct {
    char *name;
    int line;     /* line of the [section] header; 0 when created by --set */
    kn_cfg_kv *kv;
    int nkv, cap;
} kn_cfg_section;

struct kn_config {
    char *path;   /* file path or the name given to kn_config_parse_string */
    char *text;   /* original text of the file (kept for run dirs / checkpoints) */
    kn_cfg_section *sec;
    int nsec, cap;
};

/* Section by name, NULL if absent. */
kn_cfg_section *kn_cfg_find(const kn_config *cfg, const char *section);
/* Key in a section, NULL if absent (sec may be NULL). */
const kn_cfg_kv *kn_cfg_get(const kn_cfg_section *sec, const char *key);

/* Typed getters. If the key is absent, *out = def and KN_OK is returned.
 * If present but malformed/out of range: KN_ERR_CONFIG with a message naming
 * file:line, [section], key, the bad value and the expected form. */
int kn_cfg_int(kn_ctx *ctx, const kn_config *cfg, const kn_cfg_section *sec, const char *key,
               int64_t def, int64_t min, int64_t max, int64_t *out);
int kn_cfg_float(kn_ctx *ctx, const kn_config *cfg, const kn_cfg_section *sec, const char *key,
                 double def, double min, double max, double *out);
int kn_cfg_bool(kn_ctx *ctx, const kn_config *cfg, const kn_cfg_section *sec, const char *key,
                int def, int *out); /* true/false/yes/no/on/off/1/0 */
/* String value (pointer into the config, valid while cfg lives); def may be NULL. */
int kn_cfg_str(kn_ctx *ctx, const kn_config *cfg, const kn_cfg_section *sec, const char *key,
               const char *def, const char **out);
/* One of `choices` (NULL-terminated); *out = index. def_index used when absent (-1: required). */
int kn_cfg_enum(kn_ctx *ctx, const kn_config *cfg, const kn_cfg_section *sec, const char *key,
                const char *const *choices, int def_index, int *out);
/* Comma-separated list of non-empty names, whitespace trimmed. Up to `max` items
 * written into names[] (pointers into an internal copy owned by cfg). */
int kn_cfg_list(kn_ctx *ctx, const kn_config *cfg, const kn_cfg_section *sec, const char *key,
                const char **names, int max, int *count);
/* Error unless every key in `sec` is in `allowed` (NULL-terminated). The message
 * names file:line, the section, the unknown key, a close match ("did you mean
 * 'kernel'?") and the allowed keys. `what` describes the section ("a conv2d layer"). */
int kn_cfg_check_keys(kn_ctx *ctx, const kn_config *cfg, const kn_cfg_section *sec,
                      const char *const *allowed, const char *what);
/* "FILE:LINE" for a key (or the section header if key is NULL / absent), or
 * "--set section.key" for overrides. Writes into buf. */
const char *kn_cfg_where(const kn_config *cfg, const kn_cfg_section *sec, const char *key,
                         char *buf, size_t n);
/* Set [section] key to exactly `value` (no trimming or unquoting, unlike
 * kn_config_set); section and key must be names --set accepts. */
int kn_config_set_value(kn_ctx *ctx, kn_config *cfg, const char *section, const char *key, const char *value);
/* Serialise back to INI text (sections in order, overrides applied). malloc'ed.
 * Every value reads back as itself: one that would not survive a plain line
 * (leading/trailing blanks, ';', a leading '"', control bytes, or too long) is
 * written quoted and escaped, wrapped over indented continuation lines. */
char *kn_cfg_to_text(const kn_config *cfg);
/* Deep copy. */
kn_config *kn_cfg_clone(const kn_config *cfg);

#endif
