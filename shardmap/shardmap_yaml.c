/*
 * shardmap_yaml.c: shard map and plan files.
 *
 * (The YAML layer they share is in shardmap_yaml_util.c.)
 *
 * A shard map file lists the hosts in node order, each with the shards it
 * holds as compact ranges ("0-20,25"). A plan file holds the version it was
 * made from, the target map, the moves in the order to run them and, for
 * add-host plans, where the new host is. docs/config.md has every key.
 *
 * Loading collects every error as "path:line: message" before failing, so
 * one run of the tool shows everything wrong with a hand-edited file.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "shardmap.h"
#include "shardmap_yaml_int.h"
/* ---- shard lists ----------------------------------------------------------- */

/*
 * Writes the shards s in [0, n) with v[s] == want to out as compact ranges
 * ("0-20,25"); out has room for 11 bytes per shard. Returns the length.
 */
static size_t format_ranges(char *out, uint32_t n, const int32_t *v, int32_t want)
{
    size_t len = 0;
    uint32_t s = 0, e;

    out[0] = '\0';
    while (s < n) {
        if (v[s] != want) {
            s++;
            continue;
        }
        for (e = s; e + 1 < n && v[e + 1] == want; e++) {
        }
        len += (size_t)sprintf(out + len, e == s ? "%s%u" : "%s%u-%u", len ? "," : "",
                               s, e);
        s = e + 1;
    }
    return len;
}

/* Parses one decimal shard number of a list; end is past its last digit. */
static int parse_shard(const char *p, const char **end, uint32_t *out)
{
    uint32_t v = 0;

    if (!isdigit((unsigned char)*p)) {
        return -1;
    }
    for (; isdigit((unsigned char)*p); p++) {
        if (v > SHARDMAP_MAX_SHARDS * 10u) {
            return -1;
        }
        v = v * 10 + (uint32_t)(*p - '0');
    }
    *end = p;
    *out = v;
    return 0;
}

/*
 * Marks the shards of list (n or a-b, comma-separated, spaces allowed) in
 * owner[] as node's. Shards taken already go in dup[] with their first owner.
 */
static void parse_shard_list(struct shardmap__yaml *y, yaml_node_t *node,
                             const char *ctx, const char *list, uint32_t nshard,
                             int32_t node_index, int32_t *owner, int32_t *dup)
{
    int line = shardmap__yaml_line(node);
    const char *p = list, *tok;
    uint32_t a, b, s;

    while (*p == ' ') {
        p++;
    }
    while (*p != '\0') {
        tok = p;
        if (parse_shard(p, &p, &a) != 0) {
            goto bad;
        }
        b = a;
        if (*p == '-' && parse_shard(p + 1, &p, &b) != 0) {
            goto bad;
        }
        while (*p == ' ') {
            p++;
        }
        if (*p != ',' && *p != '\0') {
            goto bad;
        }
        if (a > b) {
            shardmap__yaml_error(y, line, ctx, "shards", "range %u-%u is backwards", a,
                                 b);
        } else if (b >= nshard) {
            shardmap__yaml_error(y, line, ctx, "shards",
                                 "shard %u is out of range 0..%u", b, nshard - 1);
        } else {
            for (s = a; s <= b; s++) {
                if (owner[s] < 0) {
                    owner[s] = node_index;
                } else if (dup[s] < 0) {
                    dup[s] = owner[s];
                }
            }
        }
        if (*p == ',') {
            p++;
            while (*p == ' ') {
                p++;
            }
            if (*p == '\0') {
                shardmap__yaml_error(y, line, ctx, "shards",
                                     "bad shard list: ends with a comma");
                return;
            }
        }
        continue;
    bad:
        shardmap__yaml_error(y, line, ctx, "shards",
                             "bad shard list near '%.20s': expected n or a-b, "
                             "comma-separated",
                             tok);
        return;
    }
}

/* ---- shard map bodies ---------------------------------------------------- */

/*
 * Reads version, shards and hosts from a mapping into a new map. Returns NULL
 * when it recorded errors (or ran out of memory: y->nomem).
 */
static struct shardmap *read_map(struct shardmap__yaml *y, yaml_node_t *node, int line,
                                 const char *ctx)
{
    struct shardmap__key keys[] = {
        {"version", 1, NULL, 0}, {"shards", 1, NULL, 0}, {"hosts", 1, NULL, 0}};
    struct shardmap_node *nodes = NULL;
    struct shardmap *map = NULL;
    int32_t *owner = NULL, *dup = NULL;
    uint32_t nerr = y->nerr, nshard = 0, nnode = 0, i, j, k;
    uint64_t version = 0, v;
    char hctx[96];
    char *text = NULL;
    size_t n;

    if (shardmap__yaml_fields(y, node, line, ctx, keys, 3) != 0) {
        return NULL;
    }
    if (keys[0].value) {
        shardmap__yaml_uint(y, keys[0].value, ctx, "version", 1, UINT64_MAX, &version);
    }
    if (keys[1].value) {
        shardmap__yaml_nshard(y, keys[1].value, ctx, "shards", &nshard);
    }
    if (keys[2].value == NULL ||
        shardmap__yaml_seq(y, keys[2].value, keys[2].line, ctx, "hosts") != 0) {
        goto out;
    }
    n = shardmap__yaml_len(keys[2].value);
    if (n < 1 || n > SHARDMAP_MAX_HOSTS) {
        shardmap__yaml_error(y, keys[2].line, ctx, "hosts",
                             "has %zu entries, must have 1..%u", n, SHARDMAP_MAX_HOSTS);
        goto out;
    }
    nnode = (uint32_t)n;
    nodes = calloc(nnode, sizeof(*nodes));
    if (nshard != 0) {
        owner = malloc(nshard * sizeof(*owner));
        dup = malloc(nshard * sizeof(*dup));
        text = malloc((size_t)nshard * 11 + 1);
    }
    if (nodes == NULL ||
        (nshard != 0 && (owner == NULL || dup == NULL || text == NULL))) {
        y->nomem = 1;
        goto out;
    }
    for (i = 0; i < nshard; i++) {
        owner[i] = -1;
    }
    for (i = 0; i < nnode; i++) {
        yaml_node_t *item = shardmap__yaml_item(y, keys[2].value, i);
        struct shardmap__key hk[] = {
            {"name", 1, NULL, 0}, {"weight", 0, NULL, 0}, {"shards", 1, NULL, 0}};
        const char *list;

        snprintf(hctx, sizeof(hctx), "%s.hosts[%u]", ctx, i);
        if (shardmap__yaml_fields(y, item, shardmap__yaml_line(item), hctx, hk, 3) !=
            0) {
            continue;
        }
        nodes[i].weight = 1;
        if (hk[0].value &&
            shardmap__yaml_name(y, hk[0].value, hctx, "name", nodes[i].name) == 0) {
            for (j = 0; j < i; j++) {
                if (strcmp(nodes[j].name, nodes[i].name) == 0) {
                    shardmap__yaml_error(y, shardmap__yaml_line(hk[0].value), hctx,
                                         "name",
                                         "duplicate host name '%s' (also %s.hosts[%u])",
                                         nodes[i].name, ctx, j);
                    break;
                }
            }
        }
        if (hk[1].value &&
            shardmap__yaml_uint(y, hk[1].value, hctx, "weight", 1, 1000, &v) == 0) {
            nodes[i].weight = (uint32_t)v;
        }
        if (hk[2].value == NULL ||
            (list = shardmap__yaml_text(y, hk[2].value, hctx, "shards")) == NULL ||
            nshard == 0) {
            continue;
        }
        for (j = 0; j < nshard; j++) {
            dup[j] = -1;
        }
        parse_shard_list(y, hk[2].value, hctx, list, nshard, (int32_t)i, owner, dup);
        /* Report this host's doubly assigned shards, grouped by first owner. */
        for (j = 0; j < nshard; j++) {
            int32_t first = dup[j];

            if (first < 0) {
                continue;
            }
            format_ranges(text, nshard, dup, first);
            shardmap__yaml_error(y, shardmap__yaml_line(hk[2].value), hctx, "shards",
                                 "%s %s %s already assigned to %s%s",
                                 strpbrk(text, ",-") ? "shards" : "shard", text,
                                 strpbrk(text, ",-") ? "are" : "is",
                                 (uint32_t)first == i ? "this host" : nodes[first].name,
                                 (uint32_t)first == i ? " (listed twice)" : "");
            for (k = j; k < nshard; k++) {
                if (dup[k] == first) {
                    dup[k] = -1;
                }
            }
        }
    }
    if (nshard != 0 && format_ranges(text, nshard, owner, -1) > 0) {
        shardmap__yaml_error(y, keys[2].line, ctx, "hosts",
                             "%s %s %s not assigned to any host",
                             strpbrk(text, ",-") ? "shards" : "shard", text,
                             strpbrk(text, ",-") ? "are" : "is");
    }
    if (y->nerr != nerr || y->nomem) {
        goto out;
    }
    map = shardmap_create(nshard, nodes, nnode, version);
    if (map == NULL) {
        y->nomem = 1;
        goto out;
    }
    for (i = 0; i < nshard; i++) {
        map->node_of[i] = (uint16_t)owner[i];
    }
out:
    free(text);
    free(dup);
    free(owner);
    free(nodes);
    return map;
}

/* Writes version, shards and hosts of a map as a block mapping. */
static void write_map(struct shardmap__out *o, const struct shardmap *map)
{
    int32_t *owner = malloc(map->nshard * sizeof(*owner));
    char *text = malloc((size_t)map->nshard * 11 + 1);
    uint32_t i;

    if (owner == NULL || text == NULL) {
        o->rc = o->rc ? o->rc : -ENOMEM;
        goto out;
    }
    for (i = 0; i < map->nshard; i++) {
        owner[i] = map->node_of[i];
    }
    shardmap__out_map(o, 0);
    shardmap__out_str(o, "version");
    shardmap__out_uint(o, map->version);
    shardmap__out_str(o, "shards");
    shardmap__out_uint(o, map->nshard);
    shardmap__out_str(o, "hosts");
    shardmap__out_seq(o, 0);
    for (i = 0; i < map->nnode; i++) {
        format_ranges(text, map->nshard, owner, (int32_t)i);
        shardmap__out_map(o, 0);
        shardmap__out_str(o, "name");
        shardmap__out_str(o, map->nodes[i].name);
        shardmap__out_str(o, "weight");
        shardmap__out_uint(o, map->nodes[i].weight);
        shardmap__out_str(o, "shards");
        shardmap__out_quoted(o, text);
        shardmap__out_end_map(o);
    }
    shardmap__out_end_seq(o);
    shardmap__out_end_map(o);
out:
    free(text);
    free(owner);
}

/* ---- shard map files ------------------------------------------------------ */

/* The mapping under the one top-level key of a file, or NULL (recorded). */
static yaml_node_t *top(struct shardmap__yaml *y, const char *name, int *line)
{
    struct shardmap__key keys[] = {{name, 1, NULL, 0}};
    yaml_node_t *root = shardmap__yaml_root(y);

    if (root == NULL) {
        shardmap__yaml_error(y, 1, NULL, NULL, "the file is empty, expected '%s:'",
                             name);
        return NULL;
    }
    shardmap__yaml_fields(y, root, shardmap__yaml_line(root), NULL, keys, 1);
    *line = keys[0].line;
    return keys[0].value;
}

int shardmap_load(const char *path, struct shardmap **map, char **err)
{
    struct shardmap__yaml y;
    struct shardmap *m = NULL;
    yaml_node_t *node;
    int rc, line = 0;

    *map = NULL;
    rc = shardmap__yaml_open(&y, path);
    if (rc == 0 && (node = top(&y, "shard_map", &line)) != NULL) {
        m = read_map(&y, node, line, "shard_map");
    }
    rc = shardmap__yaml_close(&y, rc, err);
    if (rc == 0 && m == NULL) {
        rc = -ENOMEM; /* nothing recorded but no map: only ENOMEM does that */
    }
    if (rc != 0) {
        shardmap_destroy(m);
        return rc;
    }
    *map = m;
    return 0;
}

int shardmap_save(const char *path, const struct shardmap *map)
{
    struct shardmap__out o;

    shardmap__out_open(&o, path, 0644);
    shardmap__out_map(&o, 0);
    shardmap__out_str(&o, "shard_map");
    write_map(&o, map);
    shardmap__out_end_map(&o);
    return shardmap__out_close(&o, path);
}

/* ---- plan files ----------------------------------------------------------- */

static void read_new_host(struct shardmap__yaml *y, yaml_node_t *node, int line,
                          struct shardmap_plan *plan)
{
    static const char ctx[] = "plan.new_host";
    struct shardmap__key keys[] = {
        {"name", 1, NULL, 0}, {"addr", 1, NULL, 0}, {"port", 1, NULL, 0}};
    struct shardmap_host_conf *h = &plan->new_host;
    uint64_t v;

    if (shardmap__yaml_fields(y, node, line, ctx, keys, 3) != 0) {
        return;
    }
    plan->has_new_host = 1;
    if (keys[0].value) {
        shardmap__yaml_name(y, keys[0].value, ctx, "name", h->name);
    }
    if (keys[1].value) {
        shardmap__yaml_str(y, keys[1].value, ctx, "addr", h->addr, sizeof(h->addr), 0);
    }
    if (keys[2].value &&
        shardmap__yaml_uint(y, keys[2].value, ctx, "port", 1, 65535, &v) == 0) {
        h->port = (uint16_t)v;
    }
}

/* Resolves a move's host name against the target; -1 when recorded. */
static int move_host(struct shardmap__yaml *y, yaml_node_t *node, const char *ctx,
                     const char *key, const struct shardmap *target)
{
    char name[SHARDMAP_NAME_MAX];
    int idx;

    if (shardmap__yaml_name(y, node, ctx, key, name) != 0 || target == NULL) {
        return -1;
    }
    idx = shardmap_node_index(target, name);
    if (idx < 0) {
        shardmap__yaml_error(y, shardmap__yaml_line(node), ctx, key,
                             "unknown host '%s': not a host of plan.target", name);
        return -1;
    }
    return idx;
}

static void read_moves(struct shardmap__yaml *y, yaml_node_t *node, int line,
                       struct shardmap_plan *plan)
{
    const struct shardmap *t = plan->target;
    uint32_t nshard = t ? t->nshard : SHARDMAP_MAX_SHARDS, i;
    int32_t *moved_by = NULL;
    char ctx[48];
    size_t n;

    if (shardmap__yaml_seq(y, node, line, "plan", "moves") != 0) {
        return;
    }
    n = shardmap__yaml_len(node);
    if (n > (size_t)SHARDMAP_MAX_SHARDS * SHARDMAP_MAX_HOSTS) {
        shardmap__yaml_error(y, line, "plan", "moves", "has %zu entries, too many", n);
        return;
    }
    plan->moves = calloc(n ? n : 1, sizeof(*plan->moves));
    moved_by = malloc(nshard * sizeof(*moved_by));
    if (plan->moves == NULL || moved_by == NULL) {
        y->nomem = 1;
        goto out;
    }
    plan->nmove = (uint32_t)n;
    for (i = 0; i < nshard; i++) {
        moved_by[i] = -1;
    }
    for (i = 0; i < n; i++) {
        yaml_node_t *item = shardmap__yaml_item(y, node, i);
        struct shardmap__key keys[] = {
            {"shard", 1, NULL, 0}, {"from", 1, NULL, 0}, {"to", 1, NULL, 0}};
        struct shardmap_move *m = &plan->moves[i];
        int ok, from = -1, to = -1, mline;
        uint64_t shard = 0;

        snprintf(ctx, sizeof(ctx), "plan.moves[%u]", i);
        if (shardmap__yaml_fields(y, item, shardmap__yaml_line(item), ctx, keys, 3) !=
            0) {
            continue;
        }
        mline = shardmap__yaml_line(item);
        ok =
            keys[0].value != NULL && shardmap__yaml_uint(y, keys[0].value, ctx, "shard",
                                                         0, nshard - 1, &shard) == 0;
        if (keys[1].value) {
            from = move_host(y, keys[1].value, ctx, "from", t);
        }
        if (keys[2].value) {
            to = move_host(y, keys[2].value, ctx, "to", t);
        }
        if (!ok || from < 0 || to < 0) {
            continue;
        }
        m->shard = (uint32_t)shard;
        m->from = (uint16_t)from;
        m->to = (uint16_t)to;
        if (from == to) {
            shardmap__yaml_error(y, mline, ctx, NULL, "from and to are both %s",
                                 t->nodes[to].name);
        } else if (t->node_of[shard] != to) {
            shardmap__yaml_error(
                y, mline, ctx, NULL, "shard %u is on %s in plan.target, not on %s",
                m->shard, t->nodes[t->node_of[shard]].name, t->nodes[to].name);
        } else if (moved_by[shard] >= 0) {
            shardmap__yaml_error(y, mline, ctx, NULL,
                                 "shard %u is already moved by plan.moves[%d]",
                                 m->shard, moved_by[shard]);
        } else {
            moved_by[shard] = (int32_t)i;
        }
    }
out:
    free(moved_by);
}

int shardmap_plan_load(const char *path, struct shardmap_plan *plan, char **err)
{
    struct shardmap__key keys[] = {{"base_version", 1, NULL, 0},
                                   {"new_host", 0, NULL, 0},
                                   {"target", 1, NULL, 0},
                                   {"moves", 1, NULL, 0}};
    struct shardmap__yaml y;
    yaml_node_t *node;
    int rc, line = 0;

    memset(plan, 0, sizeof(*plan));
    rc = shardmap__yaml_open(&y, path);
    if (rc != 0 || (node = top(&y, "plan", &line)) == NULL ||
        shardmap__yaml_fields(&y, node, line, "plan", keys, 4) != 0) {
        goto out;
    }
    if (keys[0].value) {
        shardmap__yaml_uint(&y, keys[0].value, "plan", "base_version", 1, UINT64_MAX,
                            &plan->base_version);
    }
    if (shardmap__yaml_opt(keys[1].value)) {
        read_new_host(&y, keys[1].value, keys[1].line, plan);
    }
    if (keys[2].value) {
        plan->target = read_map(&y, keys[2].value, keys[2].line, "plan.target");
    }
    if (keys[3].value) {
        read_moves(&y, keys[3].value, keys[3].line, plan);
    }
    if (plan->has_new_host && plan->target && plan->new_host.name[0] != '\0') {
        int idx = shardmap_node_index(plan->target, plan->new_host.name);

        if (idx < 0) {
            shardmap__yaml_error(
                &y, shardmap__yaml_line(keys[1].value), "plan.new_host", "name",
                "'%s' is not a host of plan.target", plan->new_host.name);
        } else {
            plan->new_host.weight = plan->target->nodes[idx].weight;
        }
    }
    if (rc == 0 && y.nerr == 0 && !y.nomem && plan->target == NULL) {
        y.nomem = 1;
    }
out:
    rc = shardmap__yaml_close(&y, rc, err);
    if (rc != 0) {
        shardmap_destroy(plan->target);
        free(plan->moves);
        memset(plan, 0, sizeof(*plan));
    }
    return rc;
}

int shardmap_plan_save(const char *path, const struct shardmap_plan *plan)
{
    const struct shardmap *t = plan->target;
    struct shardmap__out o;
    uint32_t i;

    shardmap__out_open(&o, path, 0644);
    shardmap__out_map(&o, 0);
    shardmap__out_str(&o, "plan");
    shardmap__out_map(&o, 0);
    shardmap__out_str(&o, "base_version");
    shardmap__out_uint(&o, plan->base_version);
    if (plan->has_new_host) {
        shardmap__out_str(&o, "new_host");
        shardmap__out_map(&o, 1);
        shardmap__out_str(&o, "name");
        shardmap__out_str(&o, plan->new_host.name);
        shardmap__out_str(&o, "addr");
        shardmap__out_str(&o, plan->new_host.addr);
        shardmap__out_str(&o, "port");
        shardmap__out_uint(&o, plan->new_host.port);
        shardmap__out_end_map(&o);
    }
    shardmap__out_str(&o, "target");
    write_map(&o, t);
    shardmap__out_str(&o, "moves");
    shardmap__out_seq(&o, 0);
    for (i = 0; i < plan->nmove; i++) {
        const struct shardmap_move *m = &plan->moves[i];

        shardmap__out_map(&o, 1);
        shardmap__out_str(&o, "shard");
        shardmap__out_uint(&o, m->shard);
        shardmap__out_str(&o, "from");
        shardmap__out_str(&o, t->nodes[m->from].name);
        shardmap__out_str(&o, "to");
        shardmap__out_str(&o, t->nodes[m->to].name);
        shardmap__out_end_map(&o);
    }
    shardmap__out_end_seq(&o);
    shardmap__out_end_map(&o);
    shardmap__out_end_map(&o);
    return shardmap__out_close(&o, path);
}
