/*
 * api_access.c: the access checks the handlers share: the caller's role
 * (read from his user row, once a request) and what it lets him see of a
 * company. A company the caller cannot see is 404, as one that does not
 * exist.
 */
#include <errno.h>
#include <stdint.h>

#include "api/api_int.h"

int api_caller_role(struct api_req *req, int *role)
{
    struct api_user u;
    int rc;

    if (!req->role_known) {
        rc = api_user_load(req->router, req->auth.user_id, &u);
        if (rc == BC_ENOTFOUND) {
            api_error(req, 401, "unauthorized", "the token's user no longer exists");
            return rc;
        }
        if (rc < 0) {
            api_db_error(req, rc);
            return rc;
        }
        req->role = api_role_parse(u.role);
        req->role_known = 1;
    }
    *role = req->role;
    return 0;
}

/*
 * The platform admin sees every company: one that does not exist is 404 to
 * him as to others (its teams, logo, standings and admins were answered as
 * if it did), and so is the platform's own (his), which is no company of
 * the game. 0, or the status after replying.
 */
static int company_exists(struct api_req *req, uint64_t company_id)
{
    struct sql_rows rows = {0};
    int rc = router_exec(req->router, ROUTER_GLOBAL, &rows,
                         "SELECT 1 FROM %S.companies WHERE id = %u AND platform = 0",
                         company_id);

    if (rc == 0 && rows.nrow == 0)
        rc = BC_ENOTFOUND;
    sql_rows_free(&rows);
    if (rc == BC_ENOTFOUND)
        api_error(req, 404, "not_found", "no such company");
    else if (rc < 0)
        api_db_error(req, rc);
    return rc;
}

int api_check_access(struct api_req *req, enum api_access access, uint64_t company_id)
{
    int role, rc;

    if (access == API_ACCESS_ANY)
        return 0;
    /* A member needs no read to see his own company (the platform admin's is none). */
    if (access == API_ACCESS_COMPANY_MEMBER && req->auth.company_id == company_id &&
        req->auth.role != API_ROLE_PLATFORM_ADMIN)
        return 0;
    if ((rc = api_caller_role(req, &role)) < 0)
        return rc;
    if (role == API_ROLE_PLATFORM_ADMIN)
        return access == API_ACCESS_PLATFORM_ADMIN ? 0
                                                   : company_exists(req, company_id);
    if (access == API_ACCESS_PLATFORM_ADMIN) {
        api_error(req, 403, "forbidden", "only the platform admin may do this");
        return -EACCES;
    }
    if (req->auth.company_id != company_id) {
        api_error(req, 404, "not_found", "no such company");
        return BC_ENOTFOUND;
    }
    if (access == API_ACCESS_COMPANY_ADMIN && role != API_ROLE_COMPANY_ADMIN) {
        api_error(req, 403, "forbidden", "only an admin of this company may do this");
        return -EACCES;
    }
    return 0;
}
