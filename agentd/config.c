/*
 * config.c - the daemon's settings: built-in defaults, then a JSON config file (--config), then
 * command-line flags. Later sources win. Unknown keys and flags are errors that say what was
 * meant, so a typo never silently falls back to a default.
 */
#include "agentd.h"

#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: agentd [options]\n"
               "\n"
               "agentd runs many agents in one daemon and serves them over a Unix socket\n"
               "(JSON-RPC 2.0, one request per line). Talk to it with agentctl.\n"
               "\n"
               "options:\n"
               "  --socket PATH       Unix socket to listen on (default: $AGENTD_SOCKET,\n"
               "                      else $XDG_RUNTIME_DIR/agentd.sock, else DATA/agentd.sock;\n"
               "                      with an explicit --data, DATA/agentd.sock)\n"
               "  --data DIR          data directory: database and lock (default: $AGENTD_DATA,\n"
               "                      else $XDG_DATA_HOME/agentd, else ~/.local/share/agentd)\n"
               "  --config FILE       JSON config file with any of the keys: socket, data_dir,\n"
               "                      agents_dir, log_level, max_frame_bytes, drain_timeout_ms,\n"
               "                      model, threads, ctx, kv_size, batch, parallel,\n"
               "                      chat_template, fetch_allow\n"
               "  --agents DIR        load *.agent.yaml / *.agent.json from DIR at start\n"
               "                      (new agents are created, changed ones updated)\n"
               "  --log-level LEVEL   error, warn, info (default) or debug\n"
               "  --max-frame BYTES   longest accepted request line (default 16777216)\n"
               "\n"
               "engine (the built-in inference engine; without --model, engine.* methods\n"
               "answer with an error saying so):\n"
               "  --model PATH        GGUF model to load at start (make model fetches one into\n"
               "                      models/); loading runs in the background, model.status\n"
               "                      shows its progress\n"
               "  --threads N         compute threads (default: every online core)\n"
               "  --ctx N             positions per sequence (default: the model's trained\n"
               "                      context, at most 8192)\n"
               "  --kv-size N         positions of the shared, paged KV cache (default 65536;\n"
               "                      memory is used only as pages fill)\n"
               "  --batch N           tokens per engine step: decodes + prompt chunks\n"
               "                      (default 256)\n"
               "  --parallel N        sequences generating at once (default 64; more wait)\n"
               "  --chat-template NAME  chatml, qwen2, llama3 or gemma (default: from the file)\n"
               "\n"
               "tools:\n"
               "  --fetch-allow LIST  address ranges the fetch_url tool may reach although they\n"
               "                      are loopback, private or link-local, comma-separated\n"
               "                      (e.g. 127.0.0.1/32,10.1.0.0/16; default: none)\n"
               "  -h, --help          show this help and exit\n"
               "      --methods       print the method table (markdown) and exit\n"
               "  -V, --version       show the version and exit\n"
               "\n"
               "example:\n"
               "  agentd --agents examples &\n"
               "  agentctl ping\n");
}

static int parse_size(const char *s, const char *what, size_t *out, struct ag_err *err)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || v < 1024 || v > (1ull << 31))
        return ag_err_set(err, AG_EINVAL,
                          "%s: expected a byte count from 1024 to 2147483648, "
                          "got '%s'",
                          what, s);
    *out = (size_t)v;
    return 0;
}

static int parse_int(const char *s, const char *what, long lo, long hi, int *out,
                     struct ag_err *err)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi)
        return ag_err_set(err, AG_EINVAL, "%s: expected a whole number from %ld to %ld, got '%s'",
                          what, lo, hi, s);
    *out = (int)v;
    return 0;
}

static int copy_path(char *dst, size_t n, const char *src, const char *what, struct ag_err *err)
{
    if (!src[0]) return ag_err_set(err, AG_EINVAL, "%s: empty path", what);
    if (strlen(src) >= n)
        return ag_err_set(err, AG_EINVAL, "%s: path longer than %zu bytes: %s", what, n - 1, src);
    memcpy(dst, src, strlen(src) + 1);
    return 0;
}

static int load_file(struct agentd_config *cfg, const char *path, bool *data_set,
                     struct ag_err *err)
{
    static const char *const keys[] = {"socket",        "data_dir",        "agents_dir",
                                       "log_level",     "max_frame_bytes", "drain_timeout_ms",
                                       "model",         "threads",         "ctx",
                                       "kv_size",       "batch",           "parallel",
                                       "chat_template", "fetch_allow",     NULL};
    char *text;
    size_t len;
    int rc;

    if ((rc = ag_read_file(path, 1 << 20, &text, &len, err)) != 0) return rc;
    struct proto_val *v = proto_parse(text, len, err);
    free(text);
    if (!v) {
        ag_err_prefix(err, "%s: ", path);
        return AG_EINVAL;
    }
    if (proto_type(v) != PROTO_OBJECT) {
        proto_val_free(v);
        return ag_err_set(err, AG_EINVAL, "%s: expected a JSON object", path);
    }
    const char *s;
    int64_t n;
    if ((rc = proto_param_known(v, keys, err)) != 0) goto fail;
    if ((rc = proto_param_str(v, "socket", false, &s, err)) != 0) goto fail;
    if (proto_get_str(v, "socket") &&
        (rc = copy_path(cfg->socket_path, sizeof(cfg->socket_path), s, "socket", err)) != 0)
        goto fail;
    if ((rc = proto_param_str(v, "data_dir", false, &s, err)) != 0) goto fail;
    if (proto_get_str(v, "data_dir")) {
        if ((rc = copy_path(cfg->data_dir, sizeof(cfg->data_dir), s, "data_dir", err)) != 0)
            goto fail;
        *data_set = true;
    }
    if ((rc = proto_param_str(v, "agents_dir", false, &s, err)) != 0) goto fail;
    if (proto_get_str(v, "agents_dir") &&
        (rc = copy_path(cfg->agents_dir, sizeof(cfg->agents_dir), s, "agents_dir", err)) != 0)
        goto fail;
    if ((rc = proto_param_str(v, "log_level", false, &s, err)) != 0) goto fail;
    if (proto_get_str(v, "log_level") && ag_log_parse_level(s, &cfg->log_level) != 0) {
        rc = ag_err_set(err, AG_EINVAL, "log_level: expected error, warn, info or debug");
        goto fail;
    }
    if (proto_get(v, "max_frame_bytes")) {
        if ((rc = proto_param_int(v, "max_frame_bytes", false, 1024, 1ll << 31, &n, err)) != 0)
            goto fail;
        cfg->max_frame_bytes = (size_t)n;
    }
    if (proto_get(v, "drain_timeout_ms")) {
        if ((rc = proto_param_int(v, "drain_timeout_ms", false, 0, 600000, &n, err)) != 0)
            goto fail;
        cfg->drain_timeout_ms = (int)n;
    }
    if ((rc = proto_param_str(v, "model", false, &s, err)) != 0) goto fail;
    if (proto_get_str(v, "model") &&
        (rc = copy_path(cfg->model_path, sizeof(cfg->model_path), s, "model", err)) != 0)
        goto fail;
    if ((rc = proto_param_str(v, "chat_template", false, &s, err)) != 0) goto fail;
    if (proto_get_str(v, "chat_template") &&
        (rc = copy_path(cfg->chat_template, sizeof(cfg->chat_template), s, "chat_template", err)) !=
            0)
        goto fail;
    if ((rc = proto_param_str(v, "fetch_allow", false, &s, err)) != 0) goto fail;
    if (proto_get_str(v, "fetch_allow") &&
        (rc = copy_path(cfg->fetch_allow, sizeof(cfg->fetch_allow), s, "fetch_allow", err)) != 0)
        goto fail;
    static const struct {
        const char *key;
        int64_t lo, hi;
        size_t off;
    } ints[] = {
        {"threads", 1, 256, offsetof(struct agentd_config, threads)},
        {"ctx", 16, 1 << 24, offsetof(struct agentd_config, ctx)},
        {"kv_size", 256, 1 << 26, offsetof(struct agentd_config, kv_size)},
        {"batch", 16, 2048, offsetof(struct agentd_config, batch)},
        {"parallel", 1, 1024, offsetof(struct agentd_config, parallel)},
    };
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        if (!proto_get(v, ints[i].key)) continue;
        if ((rc = proto_param_int(v, ints[i].key, false, ints[i].lo, ints[i].hi, &n, err)) != 0)
            goto fail;
        *(int *)((char *)cfg + ints[i].off) = (int)n;
    }
    proto_val_free(v);
    return 0;
fail:
    proto_val_free(v);
    /* The helpers say "params.key"; in a config file the key alone reads better. */
    if (strncmp(err->msg, "params.", 7) == 0) memmove(err->msg, err->msg + 7, strlen(err->msg) - 6);
    char *u = strstr(err->msg, "unknown parameter");
    if (u) memmove(u + 11, u + 17, strlen(u + 17) + 1), memcpy(u, "unknown key", 11);
    ag_err_prefix(err, "%s: ", path);
    return AG_EINVAL;
}

int agentd_config_load(struct agentd_config *cfg, int argc, char **argv, struct ag_err *err)
{
    enum {
        OPT_SOCKET = 256,
        OPT_DATA,
        OPT_CONFIG,
        OPT_AGENTS,
        OPT_LOG,
        OPT_FRAME,
        OPT_MODEL,
        OPT_THREADS,
        OPT_CTX,
        OPT_KV,
        OPT_BATCH,
        OPT_PARALLEL,
        OPT_TEMPLATE,
        OPT_FETCH_ALLOW,
    };
    static const struct option opts[] = {
        {"socket", required_argument, NULL, OPT_SOCKET},
        {"data", required_argument, NULL, OPT_DATA},
        {"config", required_argument, NULL, OPT_CONFIG},
        {"agents", required_argument, NULL, OPT_AGENTS},
        {"log-level", required_argument, NULL, OPT_LOG},
        {"max-frame", required_argument, NULL, OPT_FRAME},
        {"model", required_argument, NULL, OPT_MODEL},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"ctx", required_argument, NULL, OPT_CTX},
        {"kv-size", required_argument, NULL, OPT_KV},
        {"batch", required_argument, NULL, OPT_BATCH},
        {"parallel", required_argument, NULL, OPT_PARALLEL},
        {"chat-template", required_argument, NULL, OPT_TEMPLATE},
        {"fetch-allow", required_argument, NULL, OPT_FETCH_ALLOW},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL;
    bool data_set = false;
    int c, rc;

    memset(cfg, 0, sizeof(*cfg));
    cfg->log_level = AG_LOG_INFO;
    cfg->max_frame_bytes = PROTO_MAX_FRAME_DEFAULT;
    cfg->drain_timeout_ms = 5000;

    /* First pass: --help, --version and --config, so flags can override the file. */
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "hV", opts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return 1;
        }
        if (c == 'V') {
            printf("agentd %s\n", AGENTD_VERSION);
            return 1;
        }
        if (c == OPT_CONFIG) config = optarg;
    }
    if (config && (rc = load_file(cfg, config, &data_set, err)) != 0) return rc;

    optind = 1;
    while ((c = getopt_long(argc, argv, "hV", opts, NULL)) != -1) {
        switch (c) {
        case OPT_SOCKET:
            if ((rc = copy_path(cfg->socket_path, sizeof(cfg->socket_path), optarg, "--socket",
                                err)) != 0)
                return rc;
            break;
        case OPT_DATA:
            if ((rc = copy_path(cfg->data_dir, sizeof(cfg->data_dir), optarg, "--data", err)) != 0)
                return rc;
            data_set = true;
            break;
        case OPT_AGENTS:
            if ((rc = copy_path(cfg->agents_dir, sizeof(cfg->agents_dir), optarg, "--agents",
                                err)) != 0)
                return rc;
            break;
        case OPT_MODEL:
            if ((rc = copy_path(cfg->model_path, sizeof(cfg->model_path), optarg, "--model",
                                err)) != 0)
                return rc;
            break;
        case OPT_TEMPLATE:
            if ((rc = copy_path(cfg->chat_template, sizeof(cfg->chat_template), optarg,
                                "--chat-template", err)) != 0)
                return rc;
            break;
        case OPT_FETCH_ALLOW:
            if ((rc = copy_path(cfg->fetch_allow, sizeof(cfg->fetch_allow), optarg, "--fetch-allow",
                                err)) != 0)
                return rc;
            break;
        case OPT_THREADS:
            if ((rc = parse_int(optarg, "--threads", 1, 256, &cfg->threads, err)) != 0) return rc;
            break;
        case OPT_CTX:
            if ((rc = parse_int(optarg, "--ctx", 16, 1 << 24, &cfg->ctx, err)) != 0) return rc;
            break;
        case OPT_KV:
            if ((rc = parse_int(optarg, "--kv-size", 256, 1 << 26, &cfg->kv_size, err)) != 0)
                return rc;
            break;
        case OPT_BATCH:
            if ((rc = parse_int(optarg, "--batch", 16, 2048, &cfg->batch, err)) != 0) return rc;
            break;
        case OPT_PARALLEL:
            if ((rc = parse_int(optarg, "--parallel", 1, 1024, &cfg->parallel, err)) != 0)
                return rc;
            break;
        case OPT_LOG:
            if (ag_log_parse_level(optarg, &cfg->log_level) != 0)
                return ag_err_set(err, AG_EINVAL,
                                  "--log-level: expected error, warn, info or debug, got '%s'",
                                  optarg);
            break;
        case OPT_FRAME:
            if ((rc = parse_size(optarg, "--max-frame", &cfg->max_frame_bytes, err)) != 0)
                return rc;
            break;
        case OPT_CONFIG:
            break;
        case '?':
            if (optopt)
                return ag_err_set(err, AG_EINVAL,
                                  "option -%c is unknown or needs a value "
                                  "(see agentd --help)",
                                  optopt);
            return ag_err_set(err, AG_EINVAL,
                              "option '%s' is unknown or needs a value (see "
                              "agentd --help)",
                              argv[optind - 1]);
        }
    }
    if (optind < argc)
        return ag_err_set(err, AG_EINVAL, "unexpected argument '%s' (see agentd --help)",
                          argv[optind]);

    if (!cfg->data_dir[0] &&
        (rc = proto_default_data_dir(cfg->data_dir, sizeof(cfg->data_dir), err)) != 0)
        return rc;
    if (!cfg->socket_path[0]) {
        const char *env = getenv("AGENTD_SOCKET");
        if (data_set && !(env && *env)) {
            if (strlen(cfg->data_dir) + sizeof("/agentd.sock") > sizeof(cfg->socket_path))
                return ag_err_set(err, AG_EINVAL,
                                  "socket path %s/agentd.sock is too long for a "
                                  "Unix socket; pick a shorter one with --socket",
                                  cfg->data_dir);
            size_t n = strlen(cfg->data_dir);
            memcpy(cfg->socket_path, cfg->data_dir, n);
            memcpy(cfg->socket_path + n, "/agentd.sock", sizeof("/agentd.sock"));
        } else if ((rc = proto_default_socket(cfg->socket_path, sizeof(cfg->socket_path),
                                              cfg->data_dir, err)) != 0) {
            return rc;
        }
    }
    return 0;
}
