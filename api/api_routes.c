/*
 * api_routes.c: the route table: every endpoint of docs/api.md, its handler,
 * whether it needs a token, and what body it takes (0 none, 1 JSON, 2 image).
 */
#include "api/api_int.h"

const struct api_route api_routes[] = {
    {"GET", "/healthz", api_h_healthz, 0, 0, "healthz"},
    {"GET", "/readyz", api_h_readyz, 0, 0, "readyz"},
    {"GET", "/metrics", api_h_metrics, 0, 0, "metrics"},
    {"POST", "/v1/auth/signup", api_h_signup, 0, 1, "signup"},
    {"POST", "/v1/auth/login", api_h_login, 0, 1, "login"},
    {"GET", "/v1/me", api_h_me, 1, 0, "me"},
    {"PATCH", "/v1/me", api_h_me_patch, 1, 1, "me_patch"},
    {"PUT", "/v1/me/avatar", api_h_me_avatar_put, 1, 2, "avatar_put"},
    {"GET", "/v1/me/bets", api_h_my_bets, 1, 0, "my_bets"},
    {"GET", "/v1/users/{}", api_h_user_get, 1, 0, "user"},
    {"GET", "/v1/users/{}/avatar", api_h_user_avatar_get, 0, 0, "avatar"},
    {"POST", "/v1/companies", api_h_company_create, 1, 1, "company_create"},
    {"GET", "/v1/companies/{}", api_h_company_get, 1, 0, "company"},
    {"PATCH", "/v1/companies/{}", api_h_company_patch, 1, 1, "company_patch"},
    {"PUT", "/v1/companies/{}/logo", api_h_company_logo_put, 1, 2, "logo_put"},
    {"GET", "/v1/companies/{}/logo", api_h_company_logo_get, 0, 0, "logo"},
    {"POST", "/v1/companies/{}/teams", api_h_team_create, 1, 1, "team_create"},
    {"GET", "/v1/companies/{}/teams", api_h_team_list, 1, 0, "teams"},
    {"POST", "/v1/companies/{}/admins", api_h_admin_add, 1, 1, "admin_add"},
    {"POST", "/v1/matches", api_h_match_create, 1, 1, "match_create"},
    {"GET", "/v1/matches", api_h_match_list, 1, 0, "matches"},
    {"GET", "/v1/matches/{}", api_h_match_get, 1, 0, "match"},
    {"GET", "/v1/matches/{}/odds", api_h_odds_get, 1, 0, "odds"},
    {"PUT", "/v1/matches/{}/odds", api_h_odds_put, 1, 1, "odds_put"},
    {"POST", "/v1/matches/{}/result", api_h_result_post, 1, 1, "result"},
    {"GET", "/v1/matches/{}/settlement", api_h_settlement_get, 1, 0, "settlement"},
    {"POST", "/v1/bets", api_h_bet_create, 1, 1, "bet_create"},
    {"GET", "/v1/bets/{}", api_h_bet_get, 1, 0, "bet"},
    {"GET", "/v1/standings/users", api_h_standings_users, 1, 0, "standings_users"},
    {"GET", "/v1/standings/teams", api_h_standings_teams, 1, 0, "standings_teams"},
    {"GET", "/v1/standings/companies", api_h_standings_companies, 1, 0,
     "standings_companies"},
};
const int api_nroutes = (int)(sizeof(api_routes) / sizeof(api_routes[0]));
