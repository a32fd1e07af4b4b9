// SPDX-License-Identifier: Apache-2.0
/* libambit: the small C surface Node.js needs for eBPF and network namespaces, bound with koffi.
 *
 * Every function takes and returns plain integers, strings and buffers; libbpf's versioned option
 * structs stay on this side. A negative return is -errno and ambit_last_error() says what failed.
 *
 * Work inside another network namespace runs on a short-lived thread that setns()es and exits, so
 * no thread Node or libuv owns ever changes namespace (setns only affects the calling thread, and
 * libuv would otherwise run later work in the wrong namespace). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* enum bpf_attach_type values for tcx (kernel >= 6.6); bookworm's uapi headers predate them. */
#define AMBIT_BPF_TCX_INGRESS 46
#define AMBIT_BPF_TCX_EGRESS 47

#ifndef IP_TRANSPARENT
#define IP_TRANSPARENT 19
#endif

static __thread char last_error[4096];

static int fail(int err, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n < sizeof(last_error) && err)
		snprintf(last_error + n, sizeof(last_error) - n, ": %s", strerror(err));
	return -(err ? err : EINVAL);
}

const char *ambit_last_error(void)
{
	return last_error;
}

/* libbpf reports through a global print callback. Loads are serialised by this mutex, and the
 * callback appends to the loader's buffer so a verifier rejection reaches the caller verbatim. */
static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static char load_log[16384];
static size_t load_log_len;

static int collect_libbpf_output(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	int n;

	if (level == LIBBPF_DEBUG || load_log_len >= sizeof(load_log) - 1)
		return 0;
	n = vsnprintf(load_log + load_log_len, sizeof(load_log) - load_log_len, fmt, ap);
	if (n > 0)
		load_log_len += (size_t)n < sizeof(load_log) - load_log_len ? (size_t)n : sizeof(load_log) - load_log_len - 1;
	return 0;
}

static int dup_cloexec(int fd)
{
	return fcntl(fd, F_DUPFD_CLOEXEC, 3);
}

static int append_name(char *names, int names_len, int *used, const char *kind, const char *name)
{
	int n = snprintf(names + *used, names_len - *used, "%s %s\n", kind, name);

	if (n < 0 || n >= names_len - *used)
		return -1;
	*used += n;
	return 0;
}

/* Opens and loads an eBPF object. With pin_root, maps marked LIBBPF_PIN_BY_NAME are pinned there,
 * or the compatible maps already pinned there are reused (their contents kept); without it nothing
 * is pinned. Returns the number of descriptors written to fds (programs, then maps, each a dup the
 * caller owns) and their names as "prog NAME\n" / "map NAME\n" lines in names. */
int ambit_bpf_load(const char *obj_path, const char *pin_root, char *names, int names_len, int *fds, int max_fds)
{
	LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = pin_root);
	struct bpf_object *obj;
	struct bpf_program *prog;
	struct bpf_map *map;
	int count = 0, used = 0, err;

	pthread_mutex_lock(&load_lock);
	load_log_len = 0;
	load_log[0] = 0;
	libbpf_set_print(collect_libbpf_output);
	obj = bpf_object__open_file(obj_path, &opts);
	if (!obj) {
		err = errno;
		fail(err, "open %s: %s", obj_path, load_log);
		goto unlock;
	}
	if (!pin_root) {
		bpf_object__for_each_map(map, obj)
			bpf_map__set_pin_path(map, NULL);
	}
	if (bpf_object__load(obj)) {
		err = errno;
		fail(err, "load %s: %s", obj_path, load_log);
		bpf_object__close(obj);
		goto unlock;
	}
	names[0] = 0;
	err = 0;
	bpf_object__for_each_program(prog, obj) {
		if (count >= max_fds || append_name(names, names_len, &used, "prog", bpf_program__name(prog))) {
			err = ENOSPC;
			break;
		}
		if ((fds[count] = dup_cloexec(bpf_program__fd(prog))) < 0) {
			err = errno;
			break;
		}
		count++;
	}
	bpf_object__for_each_map(map, obj) {
		if (err)
			break;
		if (count >= max_fds || append_name(names, names_len, &used, "map", bpf_map__name(map))) {
			err = ENOSPC;
			break;
		}
		if ((fds[count] = dup_cloexec(bpf_map__fd(map))) < 0) {
			err = errno;
			break;
		}
		count++;
	}
	bpf_object__close(obj);
	if (err) {
		while (count > 0)
			close(fds[--count]);
		fail(err, "load %s: handing out the program and map descriptors", obj_path);
	}
unlock:
	libbpf_set_print(NULL);
	pthread_mutex_unlock(&load_lock);
	return err ? -err : count;
}

int ambit_obj_get(const char *path)
{
	int fd = bpf_obj_get(path);

	return fd < 0 ? fail(errno, "bpf_obj_get %s", path) : fd;
}

int ambit_obj_pin(int fd, const char *path)
{
	return bpf_obj_pin(fd, path) ? fail(errno, "bpf_obj_pin %s", path) : 0;
}

int ambit_close(int fd)
{
	return close(fd) ? fail(errno, "close") : 0;
}

int ambit_map_update(int fd, const void *key, const void *value, uint64_t flags)
{
	return bpf_map_update_elem(fd, key, value, flags) ? fail(errno, "map update") : 0;
}

int ambit_map_lookup(int fd, const void *key, void *value)
{
	return bpf_map_lookup_elem(fd, key, value) ? fail(errno, "map lookup") : 0;
}

int ambit_map_delete(int fd, const void *key)
{
	return bpf_map_delete_elem(fd, key) ? fail(errno, "map delete") : 0;
}

/* key NULL = first key. -ENOENT when there is no next key. */
int ambit_map_next_key(int fd, const void *key, void *next)
{
	return bpf_map_get_next_key(fd, key, next) ? fail(errno, "map next key") : 0;
}

/* out: type, key_size, value_size, max_entries, id */
int ambit_map_info(int fd, uint32_t *out)
{
	struct bpf_map_info info = {};
	__u32 len = sizeof(info);

	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		return fail(errno, "map info");
	out[0] = info.type;
	out[1] = info.key_size;
	out[2] = info.value_size;
	out[3] = info.max_entries;
	out[4] = info.id;
	return 0;
}

/* out: id, type; name: 16 bytes; tag: 8 bytes */
int ambit_prog_info(int fd, uint32_t *out, char *name, uint8_t *tag)
{
	struct bpf_prog_info info = {};
	__u32 len = sizeof(info);

	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		return fail(errno, "program info");
	out[0] = info.id;
	out[1] = info.type;
	memcpy(name, info.name, sizeof(info.name));
	memcpy(tag, info.tag, sizeof(info.tag));
	return 0;
}

/* out: type, id, prog_id, tcx ifindex (0 once the device is gone), tcx attach type.
 * struct bpf_link_info is read raw: bookworm's header lacks its tcx member, which sits in the
 * 8-byte-aligned union at offset 16 as { __u32 ifindex; __u32 attach_type; }. */
int ambit_link_info(int fd, uint32_t *out)
{
	uint32_t raw[64] = {};
	__u32 len = sizeof(raw);

	if (bpf_obj_get_info_by_fd(fd, raw, &len))
		return fail(errno, "link info");
	out[0] = raw[0];
	out[1] = raw[1];
	out[2] = raw[2];
	out[3] = raw[4];
	out[4] = raw[5];
	return 0;
}

int ambit_link_fd_by_id(uint32_t id)
{
	int fd = bpf_link_get_fd_by_id(id);

	return fd < 0 ? fail(errno, "link %u", id) : fd;
}

int ambit_prog_fd_by_id(uint32_t id)
{
	int fd = bpf_prog_get_fd_by_id(id);

	return fd < 0 ? fail(errno, "program %u", id) : fd;
}

int ambit_link_update(int link_fd, int prog_fd)
{
	return bpf_link_update(link_fd, prog_fd, NULL) ? fail(errno, "link update") : 0;
}

int ambit_link_detach(int link_fd)
{
	return bpf_link_detach(link_fd) ? fail(errno, "link detach") : 0;
}

int ambit_num_possible_cpus(void)
{
	return libbpf_num_possible_cpus();
}

/* ---- running work inside a network namespace ---------------------------------------------- */

struct ns_call {
	const char *netns;
	int (*fn)(void *arg);
	void *arg;
	int ret;
	char error[sizeof(last_error)];
};

static void *ns_thread(void *p)
{
	struct ns_call *c = p;
	int nsfd = open(c->netns, O_RDONLY | O_CLOEXEC);

	if (nsfd < 0) {
		c->ret = fail(errno, "open network namespace %s", c->netns);
	} else if (setns(nsfd, CLONE_NEWNET)) {
		c->ret = fail(errno, "setns %s", c->netns);
		close(nsfd);
	} else {
		close(nsfd);
		c->ret = c->fn(c->arg);
	}
	memcpy(c->error, last_error, sizeof(c->error));
	return NULL;
}

/* netns NULL or "" = the caller's own namespace, no thread. */
static int in_netns(const char *netns, int (*fn)(void *), void *arg)
{
	struct ns_call c = { .netns = netns, .fn = fn, .arg = arg };
	pthread_t t;
	int err;

	if (!netns || !*netns)
		return fn(arg);
	err = pthread_create(&t, NULL, ns_thread, &c);
	if (err)
		return fail(err, "pthread_create");
	pthread_join(t, NULL);
	if (c.ret < 0)
		memcpy(last_error, c.error, sizeof(last_error));
	return c.ret;
}

static int resolve_ifindex(const char *ifname, int ifindex)
{
	int idx;

	if (!ifname || !*ifname)
		return ifindex;
	idx = (int)if_nametoindex(ifname);
	return idx ? idx : fail(errno, "interface %s", ifname);
}

struct tcx_attach_args {
	int prog_fd, ifindex, egress;
	const char *ifname;
	int *ifindex_out;
};

static int do_tcx_attach(void *p)
{
	struct tcx_attach_args *a = p;
	int ifindex = resolve_ifindex(a->ifname, a->ifindex);
	int fd;

	if (ifindex < 0)
		return ifindex;
	fd = bpf_link_create(a->prog_fd, ifindex, a->egress ? AMBIT_BPF_TCX_EGRESS : AMBIT_BPF_TCX_INGRESS, NULL);
	if (fd < 0)
		return fail(errno, "tcx attach to ifindex %d %s", ifindex, a->egress ? "egress" : "ingress");
	if (a->ifindex_out)
		*a->ifindex_out = ifindex;
	return fd;
}

/* Attaches prog_fd as a tcx link on the device named ifname (or, if ifname is NULL/empty, with
 * ifindex ifindex) inside netns. Returns the link fd; ifindex_out receives the device's ifindex. */
int ambit_tcx_attach(int prog_fd, const char *ifname, int ifindex, int egress, const char *netns, int *ifindex_out)
{
	struct tcx_attach_args a = { prog_fd, ifindex, egress, ifname, ifindex_out };

	return in_netns(netns, do_tcx_attach, &a);
}

struct tcx_query_args {
	int ifindex, egress, max;
	const char *ifname;
	uint32_t *ids;
};

static int do_tcx_query(void *p)
{
	struct tcx_query_args *a = p;
	int ifindex = resolve_ifindex(a->ifname, a->ifindex);
	LIBBPF_OPTS(bpf_prog_query_opts, q, .prog_ids = a->ids, .prog_cnt = (__u32)a->max);

	if (ifindex < 0)
		return ifindex;
	/* For tcx the query target is the ifindex itself, not a file descriptor. */
	if (bpf_prog_query_opts(ifindex, a->egress ? AMBIT_BPF_TCX_EGRESS : AMBIT_BPF_TCX_INGRESS, &q))
		return fail(errno, "tcx query ifindex %d", ifindex);
	return (int)q.prog_cnt;
}

/* Writes the ids of the programs attached to a device's tcx ingress/egress, in order; returns their number. */
int ambit_tcx_query(const char *netns, const char *ifname, int ifindex, int egress, uint32_t *ids, int max)
{
	struct tcx_query_args a = { ifindex, egress, max, ifname, ids };

	return in_netns(netns, do_tcx_query, &a);
}

struct test_run_args {
	int prog_fd;
	const void *data;
	int len;
	void *ctx;
	int ctx_len;
	void *out;
	int *out_len;
	uint32_t *retval;
};

static int do_test_run(void *p)
{
	struct test_run_args *a = p;
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = a->data, .data_size_in = (__u32)a->len, .data_out = a->out,
		    .data_size_out = (__u32)*a->out_len, .ctx_in = a->ctx, .ctx_size_in = (__u32)a->ctx_len,
		    .repeat = 1);

	if (bpf_prog_test_run_opts(a->prog_fd, &o))
		return fail(errno, "BPF_PROG_TEST_RUN");
	*a->out_len = (int)o.data_size_out;
	*a->retval = o.retval;
	return 0;
}

/* BPF_PROG_TEST_RUN: runs prog_fd on one packet. ctx (a struct __sk_buff) names devices of netns. */
int ambit_test_run(int prog_fd, const char *netns, const void *data, int len, void *ctx, int ctx_len, void *out,
		   int *out_len, uint32_t *retval)
{
	struct test_run_args a = { prog_fd, data, len, ctx, ctx_len, out, out_len, retval };

	return in_netns(netns, do_test_run, &a);
}

struct listen_args {
	const char *ip;
	int port, transparent, reuseport, backlog;
	uint32_t mark;
};

static int set_int_opt(int fd, int level, int opt, int value, const char *what)
{
	return setsockopt(fd, level, opt, &value, sizeof(value)) ? fail(errno, "setsockopt %s", what) : 0;
}

static int do_listen(void *p)
{
	struct listen_args *a = p;
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)a->port) };
	int fd, err;

	if (inet_pton(AF_INET, a->ip, &addr.sin_addr) != 1)
		return fail(EINVAL, "listen address %s is not IPv4", a->ip);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fail(errno, "socket");
	err = set_int_opt(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
	if (!err && a->reuseport)
		err = set_int_opt(fd, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
	if (!err && a->transparent)
		err = set_int_opt(fd, SOL_IP, IP_TRANSPARENT, 1, "IP_TRANSPARENT");
	if (!err && a->mark)
		err = set_int_opt(fd, SOL_SOCKET, SO_MARK, (int)a->mark, "SO_MARK");
	if (!err && bind(fd, (struct sockaddr *)&addr, sizeof(addr)))
		err = fail(errno, "bind %s:%d", a->ip, a->port);
	if (!err && listen(fd, a->backlog))
		err = fail(errno, "listen %s:%d", a->ip, a->port);
	if (err) {
		close(fd);
		return err;
	}
	return fd;
}

/* A listening TCP socket created inside netns (NULL = here), for net.Server.listen({ fd }). */
int ambit_listen(const char *netns, const char *ip, int port, int transparent, int reuseport, uint32_t mark, int backlog)
{
	struct listen_args a = { ip, port, transparent, reuseport, backlog, mark };

	return in_netns(netns, do_listen, &a);
}

struct socket_args {
	const char *ip;
	int port;
	int transparent;
};

static int do_socket(void *p)
{
	struct socket_args *a = p;
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)a->port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return fail(errno, "socket");
	if (!a->port && !(a->ip && *a->ip))
		return fd;
	if (inet_pton(AF_INET, a->ip && *a->ip ? a->ip : "0.0.0.0", &addr.sin_addr) != 1) {
		close(fd);
		return fail(EINVAL, "bind address %s is not IPv4", a->ip);
	}
	if (set_int_opt(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR") ||
	    (a->transparent && set_int_opt(fd, SOL_IP, IP_TRANSPARENT, 1, "IP_TRANSPARENT")) ||
	    bind(fd, (struct sockaddr *)&addr, sizeof(addr))) {
		int err = errno;

		close(fd);
		return fail(err, "bind %s:%d", a->ip ? a->ip : "0.0.0.0", a->port);
	}
	return fd;
}

/* An unconnected TCP socket that lives in netns, bound to ip:port when either is given (port 0:
 * any): new net.Socket({ fd }).connect() then connects from inside that namespace. */
int ambit_socket(const char *netns, const char *ip, int port)
{
	struct socket_args a = { ip, port, 0 };

	return in_netns(netns, do_socket, &a);
}

/* An unconnected TCP socket here, bound to ip (any port) with IP_TRANSPARENT: it may be an
 * address this namespace does not own, so a proxy can connect on behalf of its client. */
int ambit_transparent_socket(const char *ip)
{
	struct socket_args a = { ip, 0, 1 };

	return in_netns(NULL, do_socket, &a);
}

int ambit_getsockopt_int(int fd, int level, int opt)
{
	int value = 0;
	socklen_t len = sizeof(value);

	return getsockopt(fd, level, opt, &value, &len) ? fail(errno, "getsockopt") : value;
}

struct probe_args {
	int prog_fd;
	int ret;
	char error[sizeof(last_error)];
};

static void *probe_thread(void *p)
{
	struct probe_args *a = p;
	int link;

	/* A private, empty network namespace for this thread alone: it has only lo (ifindex 1) and
	 * vanishes when the thread exits, so the probe touches no namespace anyone else uses. */
	if (unshare(CLONE_NEWNET)) {
		a->ret = fail(errno, "unshare(CLONE_NEWNET)");
	} else if ((link = bpf_link_create(a->prog_fd, 1, AMBIT_BPF_TCX_INGRESS, NULL)) < 0) {
		a->ret = fail(errno, "tcx attach (bpf_link_create, attach type %d)", AMBIT_BPF_TCX_INGRESS);
	} else {
		close(link);
		a->ret = 0;
	}
	memcpy(a->error, last_error, sizeof(a->error));
	return NULL;
}

/* Proves the kernel accepts a tcx link for prog_fd, in a throwaway namespace. */
int ambit_probe_tcx(int prog_fd)
{
	struct probe_args a = { .prog_fd = prog_fd };
	pthread_t t;
	int err = pthread_create(&t, NULL, probe_thread, &a);

	if (err)
		return fail(err, "pthread_create");
	pthread_join(t, NULL);
	if (a.ret < 0)
		memcpy(last_error, a.error, sizeof(last_error));
	return a.ret;
}
