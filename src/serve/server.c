/* rlhi serve: libmicrohttpd in thread-per-connection mode around the
 * engine's OpenAI schema (rlhi/llm.h).
 *
 * Each connection's thread reads the body (bounded by max_body_bytes),
 * starts an oai call and waits for it in slices of WAIT_SLICE_S, checking
 * between slices whether the client has gone (poll on the socket for
 * POLLRDHUP), so that a vanished client cancels its sequences without
 * waiting for the next write to fail. Streams are served by a content
 * reader callback that blocks the same way; when MHD tears a response down
 * (finished, or the write failed), the free callback ends the call.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rlhi/serve.h"

/* How often a waiting connection thread checks that its client is still
 * there: a quarter second keeps a cancelled sequence's cost to a few
 * decode steps. */
#define WAIT_SLICE_S 0.25

struct rlhi_server {
    struct MHD_Daemon *d;
    struct rlhi_engine *e;
    bool own_engine;
    char *api_key;
    double timeout_s;
    size_t max_body;
    int port;
    pthread_mutex_t mu;
    int fail_n, fail_status;
    uint64_t nrequests;
    int inflight;   /* completion calls not yet answered in full */
};

/* How long a stop waits for answers in flight (their error events) to be
 * written before the connections are closed. */
#define STOP_GRACE_S 2.0

static void inflight_add(struct rlhi_server *s, int d)
{
    pthread_mutex_lock(&s->mu);
    s->inflight += d;
    pthread_mutex_unlock(&s->mu);
}

/* Per-request state, kept in MHD's con_cls. */
struct req {
    struct rlhi_buf body;
    bool too_large;
};

/* A streaming response's state, owned by the response (free callback). */
struct stream {
    struct rlhi_server *srv;
    struct rlhi_oai_call *call;
    struct MHD_Connection *conn;
    struct rlhi_buf out;
    size_t off;
    bool done;
    double deadline;
};

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    size_t n;

    (void)cls;
    vsnprintf(msg, sizeof msg, fmt, ap);
    n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        msg[--n] = 0;
    rlhi_log(RLHI_LOG_DEBUG, "http: %s", msg);
}

static enum MHD_Result send_buf(struct MHD_Connection *c, int status,
                                const char *type, const char *data,
                                size_t len)
{
    struct MHD_Response *r;
    enum MHD_Result ret;

    r = MHD_create_response_from_buffer(len, (void *)data,
                                        MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_error(struct MHD_Connection *c, int status,
                                  const char *msg, const char *type,
                                  const char *code, const char *allow)
{
    struct rlhi_buf b = RLHI_BUF_INIT;
    struct MHD_Response *r;
    enum MHD_Result ret = MHD_NO;

    if (rlhi_oai_error_json(&b, msg, type, NULL, code))
        return MHD_NO;
    r = MHD_create_response_from_buffer(b.len, b.buf, MHD_RESPMEM_MUST_COPY);
    if (r) {
        MHD_add_response_header(r, "Content-Type", "application/json");
        if (allow)
            MHD_add_response_header(r, "Allow", allow);
        if (status == 401)
            MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
        ret = MHD_queue_response(c, (unsigned)status, r);
        MHD_destroy_response(r);
    }
    rlhi_buf_release(&b);
    return ret;
}

/* True when the client has closed its side or reset the connection. */
static bool client_gone(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct pollfd p;

    if (!ci)
        return false;
    p.fd = ci->connect_fd;
    p.events = POLLRDHUP;
    p.revents = 0;
    if (poll(&p, 1, 0) <= 0)
        return false;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

static bool authorized(struct rlhi_server *s, struct MHD_Connection *c)
{
    const char *h;
    size_t n;

    if (!s->api_key)
        return true;
    h = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                    MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncmp(h, "Bearer ", 7))
        return false;
    h += 7;
    n = strlen(s->api_key);
    /* compare every byte, whatever matches, so timing says nothing */
    {
        size_t i, hl = strlen(h);
        unsigned char diff = hl != n;

        for (i = 0; i < n; i++)
            diff |= (unsigned char)(s->api_key[i] ^ (i < hl ? h[i] : 0));
        return diff == 0;
    }
}

/* ---- streaming -------------------------------------------------------- */

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct stream *st = cls;
    size_t n;

    (void)pos;
    while (st->off == st->out.len) {
        double left;
        int r;

        if (st->done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        rlhi_buf_clear(&st->out);
        st->off = 0;
        left = st->deadline - rlhi_time_now();
        if (left <= 0) {
            struct rlhi_buf e = RLHI_BUF_INIT;

            rlhi_oai_error_json(&e, "the request timed out", "timeout", NULL,
                                "timeout");
            rlhi_buf_addf(&st->out, "data: %s\n\ndata: [DONE]\n\n",
                          e.buf ? e.buf : "{}");
            rlhi_buf_release(&e);
            st->done = true;
            break;
        }
        if (client_gone(st->conn))
            return MHD_CONTENT_READER_END_WITH_ERROR;
        r = rlhi_oai_wait(st->call, left < WAIT_SLICE_S ? left : WAIT_SLICE_S,
                          &st->out, &st->done);
        if (r < 0)
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    n = st->out.len - st->off;
    if (n > max)
        n = max;
    memcpy(buf, st->out.buf + st->off, n);
    st->off += n;
    return (ssize_t)n;
}

static void stream_free(void *cls)
{
    struct stream *st = cls;

    rlhi_oai_end(st->call);
    rlhi_buf_release(&st->out);
    inflight_add(st->srv, -1);
    rlhi_free(st);
}

/* ---- routes ----------------------------------------------------------- */

static enum MHD_Result completion(struct rlhi_server *s,
                                  struct MHD_Connection *conn,
                                  const char *url, struct req *q,
                                  bool *streaming)
{
    struct rlhi_buf out = RLHI_BUF_INIT;
    struct rlhi_oai_call *call = NULL;
    enum MHD_Result ret;
    double deadline = rlhi_time_now() + s->timeout_s;
    int status = 0, r;
    bool done = false;

    pthread_mutex_lock(&s->mu);
    if (s->fail_n > 0) {
        s->fail_n--;
        status = s->fail_status;
    }
    pthread_mutex_unlock(&s->mu);
    if (status)
        return send_error(conn, status, "injected failure (test hook)",
                          "server_error", NULL, NULL);

    r = rlhi_oai_start(s->e, url, q->body.buf ? q->body.buf : "", q->body.len,
                       &call, &status, &out);
    if (r) {
        ret = send_buf(conn, status, "application/json", out.buf ? out.buf
                                                                  : "{}",
                       out.len ? out.len : 2);
        rlhi_buf_release(&out);
        return ret;
    }

    if (rlhi_oai_is_stream(call)) {
        struct stream *st = rlhi_calloc(1, sizeof *st);
        struct MHD_Response *resp;

        if (!st) {
            rlhi_oai_end(call);
            return MHD_NO;
        }
        st->srv = s;
        *streaming = true; /* stream_free() ends it */
        st->call = call;
        st->conn = conn;
        st->deadline = deadline;
        /* 4 KiB blocks: SSE events are small and should leave at once */
        resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096,
                                                 stream_read, st,
                                                 stream_free);
        if (!resp) {
            stream_free(st);
            return MHD_NO;
        }
        MHD_add_response_header(resp, "Content-Type", "text/event-stream");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp);
        return ret;
    }

    while (!done) {
        double left = deadline - rlhi_time_now();

        if (left <= 0) {
            rlhi_oai_end(call);
            rlhi_buf_release(&out);
            return send_error(conn, 504, "the request timed out", "timeout",
                              "timeout", NULL);
        }
        if (client_gone(conn)) {
            rlhi_oai_end(call);
            rlhi_buf_release(&out);
            return MHD_NO; /* nobody to answer: close */
        }
        r = rlhi_oai_wait(call, left < WAIT_SLICE_S ? left : WAIT_SLICE_S,
                          &out, &done);
        if (r < 0) {
            rlhi_oai_end(call);
            rlhi_buf_release(&out);
            return MHD_NO;
        }
    }
    status = rlhi_oai_status(call);
    rlhi_oai_end(call);
    ret = send_buf(conn, status, "application/json", out.buf, out.len);
    rlhi_buf_release(&out);
    return ret;
}

static enum MHD_Result do_completion(struct rlhi_server *s,
                                     struct MHD_Connection *conn,
                                     const char *url, struct req *q)
{
    bool streaming = false;
    enum MHD_Result ret;

    inflight_add(s, 1);
    ret = completion(s, conn, url, q, &streaming);
    if (!streaming)
        inflight_add(s, -1);
    return ret;
}

static enum MHD_Result do_models(struct rlhi_server *s,
                                 struct MHD_Connection *conn)
{
    struct rlhi_buf b = RLHI_BUF_INIT;
    enum MHD_Result ret;

    rlhi_buf_adds(&b, "{\"object\":\"list\",\"data\":[{\"id\":");
    rlhi_buf_add_json_str(&b, rlhi_engine_model_id(s->e),
                          strlen(rlhi_engine_model_id(s->e)));
    rlhi_buf_adds(&b, ",\"object\":\"model\",\"created\":0,"
                      "\"owned_by\":\"rlhi\"}]}");
    if (!b.buf)
        return MHD_NO;
    ret = send_buf(conn, 200, "application/json", b.buf, b.len);
    rlhi_buf_release(&b);
    return ret;
}

static enum MHD_Result too_large(struct rlhi_server *s,
                                 struct MHD_Connection *conn)
{
    char msg[128];

    snprintf(msg, sizeof msg, "the request body is larger than the limit "
             "of %zu bytes", s->max_body);
    return send_error(conn, 413, msg, "invalid_request_error",
                      "request_too_large", NULL);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn,
                               const char *url, const char *method,
                               const char *version, const char *upload,
                               size_t *upload_size, void **con_cls)
{
    struct rlhi_server *s = cls;
    struct req *q = *con_cls;
    bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    bool post = !strcmp(method, "POST");

    (void)version;
    if (!q) {
        const char *cl;

        q = rlhi_calloc(1, sizeof *q);
        if (!q)
            return MHD_NO;
        *con_cls = q;
        pthread_mutex_lock(&s->mu);
        s->nrequests++;
        pthread_mutex_unlock(&s->mu);
        /* A declared length over the limit is refused before reading it:
         * MHD then skips the body and closes the connection. */
        cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                         MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > s->max_body)
            return too_large(s, conn);
        return MHD_YES;
    }
    if (*upload_size) {
        if (!q->too_large &&
            (q->body.len + *upload_size > s->max_body ||
             rlhi_buf_add(&q->body, upload, *upload_size)))
            q->too_large = true;
        *upload_size = 0;
        return MHD_YES;
    }

    /* The whole request is in: route it. */
    if (!strcmp(url, "/health")) {
        if (!get)
            return send_error(conn, 405, "method not allowed", NULL, NULL,
                              "GET");
        return send_buf(conn, 200, "application/json", "{\"status\":\"ok\"}",
                        15);
    }
    if (!strcmp(url, "/v1/models") || !strcmp(url, "/v1/completions") ||
        !strcmp(url, "/v1/chat/completions")) {
        bool models = !strcmp(url, "/v1/models");

        if (!authorized(s, conn))
            return send_error(conn, 401, "invalid or missing API key "
                              "(send 'Authorization: Bearer KEY')",
                              "invalid_request_error", "invalid_api_key",
                              NULL);
        if (models ? !get : !post)
            return send_error(conn, 405, "method not allowed", NULL, NULL,
                              models ? "GET" : "POST");
        if (models)
            return do_models(s, conn);
        if (q->too_large)
            return too_large(s, conn);
        return do_completion(s, conn, url, q);
    }
    return send_error(conn, 404, "unknown path", "invalid_request_error",
                      "not_found", NULL);
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    struct req *q = *con_cls;

    (void)cls;
    (void)conn;
    (void)toe;
    if (!q)
        return;
    rlhi_buf_release(&q->body);
    rlhi_free(q);
    *con_cls = NULL;
}

/* ---- start and stop --------------------------------------------------- */

int rlhi_serve_start_with(struct rlhi_server **out, struct rlhi_engine *e,
                          const struct rlhi_serve_options *o)
{
    struct rlhi_server *s;
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    struct sockaddr *addr;
    const char *host = o->host ? o->host : "127.0.0.1";
    const union MHD_DaemonInfo *di;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                     MHD_USE_ERROR_LOG | MHD_USE_ITC;
    unsigned timeout;

    *out = NULL;
    if (o->port < 0 || o->port > 65535)
        return rlhi_err(RLHI_EINVAL, "port %d is out of range", o->port);
    if (!strcmp(host, "localhost"))
        host = "127.0.0.1";
    memset(&a4, 0, sizeof a4);
    memset(&a6, 0, sizeof a6);
    if (inet_pton(AF_INET, host, &a4.sin_addr) == 1) {
        a4.sin_family = AF_INET;
        a4.sin_port = htons((uint16_t)o->port);
        addr = (struct sockaddr *)&a4;
    } else if (inet_pton(AF_INET6, host, &a6.sin6_addr) == 1) {
        a6.sin6_family = AF_INET6;
        a6.sin6_port = htons((uint16_t)o->port);
        addr = (struct sockaddr *)&a6;
        flags |= MHD_USE_IPv6;
    } else {
        return rlhi_err(RLHI_EINVAL, "cannot use host '%s': give a numeric "
                        "IPv4 or IPv6 address", host);
    }

    s = rlhi_calloc(1, sizeof *s);
    if (!s)
        return rlhi_err(RLHI_ENOMEM, "out of memory");
    pthread_mutex_init(&s->mu, NULL);
    s->e = e;
    s->timeout_s = o->timeout_s > 0 ? o->timeout_s : 600;
    s->max_body = o->max_body_bytes ? o->max_body_bytes : (size_t)1 << 20;
    if (o->api_key && !(s->api_key = rlhi_strdup(o->api_key))) {
        rlhi_serve_stop(s);
        return rlhi_err(RLHI_ENOMEM, "out of memory");
    }
    /* MHD's idle timeout drops clients that stall mid-request; a waiting
     * handler is not idle, so the request timeout is enforced above. */
    timeout = (unsigned)(s->timeout_s + 1);
    s->d = MHD_start_daemon(
        flags, (uint16_t)o->port, NULL, NULL, handler, s,
        MHD_OPTION_SOCK_ADDR, addr,
        MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)(o->max_connections > 0 ? o->max_connections : 64),
        MHD_OPTION_CONNECTION_TIMEOUT, timeout,
        MHD_OPTION_NOTIFY_COMPLETED, completed, s,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
        MHD_OPTION_END);
    if (!s->d) {
        int r = rlhi_err(RLHI_EIO, "cannot listen on '%s' port %d "
                         "(in use, or not an address of this machine)",
                         host, o->port);

        rlhi_serve_stop(s);
        return r;
    }
    di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : o->port;
    *out = s;
    return 0;
}

int rlhi_serve_start(struct rlhi_server **out,
                     const struct rlhi_serve_options *o)
{
    struct rlhi_engine *e = NULL;
    int r;

    *out = NULL;
    r = rlhi_engine_open(&e, &o->engine);
    if (r)
        return r;
    r = rlhi_serve_start_with(out, e, o);
    if (r) {
        rlhi_engine_close(e);
        return r;
    }
    (*out)->own_engine = true;
    return 0;
}

int rlhi_serve_port(const struct rlhi_server *s)
{
    return s->port;
}

struct rlhi_engine *rlhi_serve_engine(struct rlhi_server *s)
{
    return s->e;
}

uint64_t rlhi_serve_requests(const struct rlhi_server *s)
{
    uint64_t n;

    pthread_mutex_lock((pthread_mutex_t *)&s->mu);
    n = s->nrequests;
    pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
    return n;
}

void rlhi__serve_fail_next(struct rlhi_server *s, int n, int status)
{
    pthread_mutex_lock(&s->mu);
    s->fail_n = n;
    s->fail_status = status;
    pthread_mutex_unlock(&s->mu);
}

void rlhi_serve_stop(struct rlhi_server *s)
{
    if (!s)
        return;
    if (s->d) {
        /* No new connections; then fail the work in flight so that every
         * waiting connection thread answers and ends; then join them. */
        double t0 = rlhi_time_now();
        int n;

        MHD_quiesce_daemon(s->d);
        if (s->own_engine)
            rlhi_engine_shutdown(s->e);
        do {
            pthread_mutex_lock(&s->mu);
            n = s->inflight;
            pthread_mutex_unlock(&s->mu);
            if (n)
                usleep(5000);
        } while (n && rlhi_time_now() - t0 < STOP_GRACE_S);
        MHD_stop_daemon(s->d);
    }
    if (s->own_engine)
        rlhi_engine_close(s->e);
    pthread_mutex_destroy(&s->mu);
    rlhi_free(s->api_key);
    rlhi_free(s);
}
