/*
 * api_tarpit.h: refused logins and sign-ups answered late (api_tarpit.c).
 * Internal to the API server, included by api_int.h.
 */
#ifndef API_TARPIT_H
#define API_TARPIT_H

#include <stdint.h>

struct api_req;

/*
 * api_tarpit.c: answered requests held delay_ms before resume(req) sends
 * them (the refusals of logins and sign-ups), at most max at once, by a
 * thread of its own. api_tarpit_hold() takes an answered request whose
 * connection is suspended: 0 (the tarpit resumes it, in the order held; it
 * may be freed from then on), or -EAGAIN when the tarpit is off (delay 0),
 * full or stopping (the caller resumes it). api_tarpit_drain() resumes every
 * held request at once and refuses new ones; api_tarpit_destroy() drains,
 * joins and frees (NULL accepted by all but create).
 */
struct api_tarpit;
int api_tarpit_create(uint32_t delay_ms, uint32_t max,
                      void (*resume)(struct api_req *req), struct api_tarpit **out);
int api_tarpit_hold(struct api_tarpit *t, struct api_req *req);
uint32_t api_tarpit_held(struct api_tarpit *t);
void api_tarpit_drain(struct api_tarpit *t);
void api_tarpit_destroy(struct api_tarpit *t);

#endif
