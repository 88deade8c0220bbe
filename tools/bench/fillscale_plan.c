/*
 * fillscale_plan.c: fillscale's plan: which company, team and shard each of
 * the plan's users has, the matches, and the users of the slice grouped by
 * shard.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/bench/fillscale.h"

/* ---- the plan: who is where ---------------------------------------------- */

/* Extra bets of user i (besides his bet on the first match). */
uint64_t scale_extra_bets(const struct scale *s, uint64_t i)
{
    uint64_t e = s->nbet - s->nuser;

    return (uint64_t)((unsigned __int128)e * (i + 1) / s->nuser -
                      (unsigned __int128)e * i / s->nuser);
}

/* Company and team (0: none) of user i. */
void scale_seat_of(const struct scale *s, uint64_t i, uint64_t *company, uint64_t *team)
{
    uint64_t pos = (uint64_t)((unsigned __int128)i * STRIDE % s->nuser), r;
    uint32_t lo = 0, hi = s->ncompany;

    while (hi - lo > 1) { /* the last company whose start <= pos */
        uint32_t mid = lo + (hi - lo) / 2;

        if (s->companies[mid].start <= pos)
            lo = mid;
        else
            hi = mid;
    }
    r = pos - s->companies[lo].start;
    *company = s->companies[lo].id;
    *team = s->companies[lo].nteam == 0 || r % NO_TEAM_EVERY == NO_TEAM_EVERY - 1
                ? 0
                : s->companies[lo].teams[r % s->companies[lo].nteam];
}

int scale_email_of(uint64_t i, char *buf, size_t size)
{
    return snprintf(buf, size, "scale-%" PRIu64 "@scale.invalid", i);
}

/*
 * Reads the plan file: every error is reported (file:line), then -EINVAL.
 * The companies and teams must exist, each team in its company.
 */
int scale_plan_load(struct scale *s, const char *path)
{
    struct sql_rows co = {0}, te = {0};
    char line[1 << 16];
    uint64_t seats = 0;
    uint32_t cap = 0;
    int lineno = 0, bad = 0, rc;
    FILE *f = fopen(path, "r");

    if (f == NULL) {
        rc = -errno;
        fprintf(stderr, "fillscale: %s: %s\n", path, strerror(-rc));
        return rc;
    }
    rc = router_exec(s->r, ROUTER_GLOBAL, &co, "SELECT id FROM %S.companies");
    if (rc == 0)
        rc = router_exec(s->r, ROUTER_GLOBAL, &te,
                         "SELECT id, company_id FROM %S.teams");
    if (rc < 0) {
        fprintf(stderr, "fillscale: reading the companies: %s\n", router_last_error());
        goto out;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        struct scale_company *c;
        char *p = line, *end, *teams;
        int found = 0;

        lineno++;
        p += strspn(p, " \t");
        if (*p == '#' || *p == '\n' || *p == '\0')
            continue;
        if (s->ncompany == cap) {
            cap = cap ? 2 * cap : 256;
            c = realloc(s->companies, cap * sizeof(*c));
            if (c == NULL) {
                rc = -ENOMEM;
                goto out;
            }
            s->companies = c;
        }
        c = &s->companies[s->ncompany];
        memset(c, 0, sizeof(*c));
        if (strncmp(p, "company", 7) != 0) {
            fprintf(stderr, "fillscale: %s:%d: expected 'company ID SIZE [TEAMS]'\n",
                    path, lineno);
            bad = 1;
            continue;
        }
        c->id = strtoull(p + 7, &end, 10);
        c->size = strtoull(end, &teams, 10);
        if (c->id == 0 || c->size == 0 || teams == end) {
            fprintf(stderr, "fillscale: %s:%d: a company id and a size > 0 expected\n",
                    path, lineno);
            bad = 1;
            continue;
        }
        for (uint32_t r = 0; r < co.nrow && !found; r++)
            found = strtoull(sql_cell(&co, r, 0), NULL, 10) == c->id;
        if (!found) {
            fprintf(stderr, "fillscale: %s:%d: no company %" PRIu64 "\n", path, lineno,
                    c->id);
            bad = 1;
        }
        teams += strspn(teams, " \t");
        for (p = teams; *p != '\0' && *p != '\n';) {
            uint64_t t = strtoull(p, &end, 10), *ts;

            found = 0;
            for (uint32_t r = 0; r < te.nrow && !found; r++)
                found = strtoull(sql_cell(&te, r, 0), NULL, 10) == t &&
                        strtoull(sql_cell(&te, r, 1), NULL, 10) == c->id;
            if (end == p || !found) {
                fprintf(stderr,
                        "fillscale: %s:%d: no team '%.20s' in company %" PRIu64 "\n",
                        path, lineno, p, c->id);
                bad = 1;
                break;
            }
            if ((ts = realloc(c->teams, (c->nteam + 1) * sizeof(*ts))) == NULL) {
                rc = -ENOMEM;
                goto out;
            }
            c->teams = ts;
            c->teams[c->nteam++] = t;
            p = end + (*end == ',');
        }
        c->start = seats;
        seats += c->size;
        s->ncompany++;
    }
    if (!bad && seats != s->nuser) {
        fprintf(stderr,
                "fillscale: %s: the companies have %" PRIu64
                " seats, --users is %" PRIu64 "\n",
                path, seats, s->nuser);
        bad = 1;
    }
    if (!bad && s->nuser % STRIDE == 0) {
        fprintf(stderr, "fillscale: --users must not be a multiple of %llu\n", STRIDE);
        bad = 1;
    }
    rc = bad ? -EINVAL : 0;
out:
    sql_rows_free(&co);
    sql_rows_free(&te);
    fclose(f);
    return rc;
}

/* The matches' odds; they must be scheduled. */
int scale_matches_load(struct scale *s)
{
    for (uint32_t m = 0; m < s->nmatch; m++) {
        struct sql_rows rows = {0};
        int rc = router_exec(s->r, ROUTER_GLOBAL, &rows,
                             "SELECT status, odds_home, odds_draw, odds_away FROM "
                             "%S.matches WHERE id = %u",
                             s->matches[m].id);

        if (rc < 0) {
            fprintf(stderr, "fillscale: reading match %" PRIu64 ": %s\n",
                    s->matches[m].id, router_last_error());
            return rc;
        }
        if (rows.nrow == 0 || strcmp(sql_cell(&rows, 0, 0), "scheduled") != 0) {
            fprintf(stderr, "fillscale: match %" PRIu64 " %s\n", s->matches[m].id,
                    rows.nrow ? "is not scheduled: its bets cannot be open"
                              : "does not exist");
            sql_rows_free(&rows);
            return BC_ENOTFOUND;
        }
        for (int i = 0; i < 3; i++)
            s->matches[m].odds[i] = strtoll(sql_cell(&rows, 0, 1 + i), NULL, 10);
        sql_rows_free(&rows);
    }
    return 0;
}

/* Groups the slice's users by the shard of their e-mail (a counting sort). */
int scale_group_users(struct scale *s)
{
    uint32_t nshard = s->map->nshard, *shard_of;
    uint64_t n = s->to - s->from;
    char email[96];

    s->first = calloc(nshard + 1, sizeof(*s->first));
    s->by_shard = malloc(n * sizeof(*s->by_shard));
    shard_of = malloc(n * sizeof(*shard_of));
    if (s->first == NULL || s->by_shard == NULL || shard_of == NULL) {
        free(shard_of);
        return -ENOMEM;
    }
    for (uint64_t i = 0; i < n; i++) {
        int len = scale_email_of(s->from + i, email, sizeof(email));

        shard_of[i] = router_shard_of_key(s->r, email, (size_t)len);
        s->first[shard_of[i] + 1]++;
    }
    for (uint32_t sh = 0; sh < nshard; sh++)
        s->first[sh + 1] += s->first[sh];
    for (uint64_t i = 0; i < n; i++) /* first[sh] is the next free place, then */
        s->by_shard[s->first[shard_of[i]]++] = (uint32_t)(s->from + i);
    for (uint32_t sh = nshard; sh > 0; sh--)
        s->first[sh] = s->first[sh - 1];
    s->first[0] = 0;
    free(shard_of);
    return 0;
}
