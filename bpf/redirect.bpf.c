// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Ambit's redirection datapath: tcx programs that steer enrolled pods' TCP into the node's ztunnel.
 *
 *   from_pod  tcx ingress of a pod's host-side veth (packets leaving the pod)
 *   to_pod    tcx egress of a pod's host-side veth (packets entering the pod)
 *   proxy_in  tcx ingress of eth0 inside ztunnel's netns: hands each redirected packet to the
 *             ztunnel socket that owns its flow, or to the transparent listener for a new flow
 *
 * Every program returns TCX_NEXT for traffic that is not ours, so other tcx programs (the CNI's)
 * still run. Direction is derived from which hook saw the packet and from the maps, never from
 * skb->cb or skb->mark, which do not survive the hop between network namespaces.
 *
 * Graceful mode (proxy_nsid >= 0): the host-side programs look up ztunnel's sockets from the
 * node's netns. A packet that is not a SYN goes to ztunnel if and only if ztunnel owns its flow,
 * so enabling or disabling a pod never breaks a connection already open. A SYN goes to ztunnel if
 * the pod is enabled and ztunnel's listener exists; without the listener it is dropped
 * (fail-closed, the default) or let through (fail-open).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "redirect.h"

#define MAX_PODS 4096
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PODS);
	__type(key, __u32); /* host-side veth ifindex */
	__type(value, struct pod_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pods_by_ifindex SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PODS);
	__type(key, __u32);   /* pod IPv4, network byte order */
	__type(value, __u32); /* POD_F_* */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pods_by_ip SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct proxy_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} proxy_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} stats SEC(".maps");

static __always_inline void bump(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);

	if (v)
		*v += 1;
}

enum parse_result {
	PARSE_OTHER,       /* not TCP: never ours */
	PARSE_TCP4,        /* IPv4 TCP, headers in reach */
	PARSE_UNSUPPORTED, /* TCP we cannot steer (IPv6, IPv4 fragments): must not bypass */
};

struct flow {
	struct ethhdr *eth;
	struct iphdr *ip;
	struct tcphdr *th;
};

/* Pulls `len` bytes into the linear area if they are not there yet. */
static __always_inline int in_reach(struct __sk_buff *skb, __u32 len)
{
	if ((void *)(long)skb->data + len <= (void *)(long)skb->data_end)
		return 1;
	return bpf_skb_pull_data(skb, len) == 0 && (void *)(long)skb->data + len <= (void *)(long)skb->data_end;
}

/* An IPv6 packet that is, or may hide, TCP. ICMPv6 (neighbour discovery), UDP and MLD (hop-by-hop
 * header followed by ICMPv6) are not TCP and pass. */
static __always_inline int ipv6_may_carry_tcp(struct __sk_buff *skb)
{
	void *data, *end;
	struct ipv6hdr *ip6;
	__u8 *next;

	if (!in_reach(skb, sizeof(struct ethhdr) + sizeof(struct ipv6hdr) + 1))
		return 1;
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	ip6 = data + sizeof(struct ethhdr);
	if ((void *)(ip6 + 1) > end)
		return 1;
	switch (ip6->nexthdr) {
	case IPPROTO_ICMPV6:
	case IPPROTO_UDP:
		return 0;
	case 0: /* hop-by-hop options: look one header further */
		next = (__u8 *)(ip6 + 1);
		if ((void *)(next + 1) > end)
			return 1;
		return *next != IPPROTO_ICMPV6;
	default:
		return ip6->nexthdr != IPPROTO_NONE;
	}
}

static __always_inline enum parse_result parse(struct __sk_buff *skb, struct flow *f)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u32 ihl_bytes;

	if ((void *)(eth + 1) > end)
		return PARSE_OTHER;
	/* Only ethertypes known to be harmless pass untouched. Anything else could carry IP the
	 * kernel decodes after tcx: two VLAN tags of id 0, say, reach tcx as 0x8100 and are delivered
	 * as IPv4 once stripped. */
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return PARSE_OTHER;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return ipv6_may_carry_tcp(skb) ? PARSE_UNSUPPORTED : PARSE_OTHER;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return PARSE_UNSUPPORTED;
	if (!in_reach(skb, sizeof(struct ethhdr) + sizeof(struct iphdr)))
		return PARSE_UNSUPPORTED;
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	ip = data + sizeof(struct ethhdr);
	if ((void *)(ip + 1) > end)
		return PARSE_UNSUPPORTED;
	if (ip->protocol != IPPROTO_TCP)
		return PARSE_OTHER;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return PARSE_UNSUPPORTED;
	ihl_bytes = ip->ihl * 4;
	if (ihl_bytes < sizeof(*ip))
		return PARSE_UNSUPPORTED;
	/* IP options move the TCP header; make sure it is in the linear area before reading it. */
	if (!in_reach(skb, sizeof(struct ethhdr) + ihl_bytes + sizeof(struct tcphdr)))
		return PARSE_UNSUPPORTED;
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	f->eth = data;
	f->ip = data + sizeof(struct ethhdr);
	if ((void *)(f->ip + 1) > end)
		return PARSE_UNSUPPORTED;
	f->th = (void *)f->ip + ihl_bytes;
	if ((void *)(f->th + 1) > end)
		return PARSE_UNSUPPORTED;
	return PARSE_TCP4;
}

static __always_inline int is_new_flow(struct tcphdr *th)
{
	return th->syn && !th->ack;
}

/* Does ztunnel own this flow: is there a live socket for its tuple in ztunnel's netns? */
static __always_inline int proxy_owns_flow(struct __sk_buff *skb, struct proxy_config *px, struct flow *f)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	int owned;

	t.ipv4.saddr = f->ip->saddr;
	t.ipv4.daddr = f->ip->daddr;
	t.ipv4.sport = f->th->source;
	t.ipv4.dport = f->th->dest;
	sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), (__u64)(__s64)px->proxy_nsid, 0);
	if (!sk)
		return 0;
	/* A full-tuple lookup falls back to listeners; a listener on this port does not own the flow.
	 * Nor does a TIME_WAIT socket: the tuple may already carry a new, direct connection (the pod
	 * was disabled since), and a late packet of the old flow that goes direct only draws a RST. */
	owned = sk->state != BPF_TCP_LISTEN && sk->state != BPF_TCP_TIME_WAIT;
	bpf_sk_release(sk);
	return owned;
}

static __always_inline int proxy_listening(struct __sk_buff *skb, struct proxy_config *px, __u16 port)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	int listening;

	t.ipv4.dport = bpf_htons(port);
	sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), (__u64)(__s64)px->proxy_nsid, 0);
	if (!sk)
		return 0;
	listening = sk->state == BPF_TCP_LISTEN;
	bpf_sk_release(sk);
	return listening;
}

enum verdict { V_NEXT, V_REDIRECT, V_DROP };

static __always_inline enum verdict decide(struct __sk_buff *skb, struct pod_state *pod, struct proxy_config *px,
					   struct flow *f, __u16 listen_port)
{
	int enabled = pod->flags & POD_F_ENABLED;

	if (!px->host_ifindex) /* ztunnel not configured yet: an enabled pod must not go direct */
		return enabled ? V_DROP : V_NEXT;
	if (px->proxy_nsid < 0)
		return enabled ? V_REDIRECT : V_NEXT;
	if (!is_new_flow(f->th))
		return proxy_owns_flow(skb, px, f) ? V_REDIRECT : V_NEXT;
	if (!enabled)
		return V_NEXT;
	if (proxy_listening(skb, px, listen_port))
		return V_REDIRECT;
	return (px->flags & PROXY_F_FAIL_OPEN) ? V_NEXT : V_DROP;
}

enum direction { FROM_POD, TO_POD };

/* What both host-side programs do with a packet of one of the node's pods: TCX_NEXT or TCX_DROP,
 * or STEER_REDIRECT with the destination MAC already rewritten to ztunnel's. */
#define STEER_REDIRECT 1

static __always_inline int steer(struct __sk_buff *skb, struct pod_state *pod, struct proxy_config *px, enum direction dir)
{
	int enabled = pod->flags & POD_F_ENABLED;
	struct flow f = {};
	enum parse_result r = parse(skb, &f);
	enum verdict v;
	__u16 port;

	if (r == PARSE_OTHER)
		return AMBIT_TCX_NEXT;
	if (r == PARSE_UNSUPPORTED) {
		if (!enabled)
			return AMBIT_TCX_NEXT;
		bump(STAT_DROP_UNSUPPORTED);
		return AMBIT_TCX_DROP;
	}
	if (dir == FROM_POD) {
		/* Packets to ztunnel itself are replies to ztunnel's own upstream connections. */
		if (px->host_ifindex && f.ip->daddr == px->proxy_ip)
			return AMBIT_TCX_NEXT;
		port = px->out_port;
	} else {
		port = f.th->dest == bpf_htons(px->hbone_port) ? px->hbone_port : px->in_port;
	}
	v = decide(skb, pod, px, &f, port);
	if (v == V_DROP) {
		bump(STAT_DROP_NO_PROXY);
		return AMBIT_TCX_DROP;
	}
	if (v == V_NEXT) {
		if (enabled)
			bump(STAT_PASS_DIRECT);
		return AMBIT_TCX_NEXT;
	}
	/* Without ztunnel's MAC the packet would arrive as PACKET_OTHERHOST and be dropped. */
	__builtin_memcpy(f.eth->h_dest, px->proxy_mac, ETH_ALEN);
	bump(dir == FROM_POD ? STAT_OUT_REDIRECT : STAT_IN_REDIRECT);
	return STEER_REDIRECT;
}

/* The state of the pod whose host-side veth this is, and ztunnel's config; NULL when the veth is
 * not a pod's. ztunnel's own veth is never a pod's, whatever the maps say: steering it would loop. */
static __always_inline struct pod_state *pod_of(struct __sk_buff *skb, struct proxy_config **px)
{
	__u32 key = 0, ifindex = skb->ifindex;
	struct pod_state *pod = bpf_map_lookup_elem(&pods_by_ifindex, &ifindex);

	*px = bpf_map_lookup_elem(&proxy_config, &key);
	if (!pod || !*px || ifindex == (*px)->host_ifindex)
		return NULL;
	return pod;
}

SEC("tc")
int from_pod(struct __sk_buff *skb)
{
	struct proxy_config *px;
	struct pod_state *pod = pod_of(skb, &px);
	int v;

	if (!pod)
		return AMBIT_TCX_NEXT;
	v = steer(skb, pod, px, FROM_POD);
	/* Ingress to ingress across the veth pair: no backlog queue, and proxy_in runs on arrival. */
	return v == STEER_REDIRECT ? bpf_redirect_peer(px->host_ifindex, 0) : v;
}

SEC("tc")
int to_pod(struct __sk_buff *skb)
{
	struct proxy_config *px;
	struct pod_state *pod = pod_of(skb, &px);
	int v;

	if (!pod)
		return AMBIT_TCX_NEXT;
	/* ztunnel's own connections to the pod, recognised by the interface they came in on, so this
	 * holds even when ztunnel uses the client's address as its source. */
	if (px->host_ifindex && skb->ingress_ifindex == px->host_ifindex)
		return AMBIT_TCX_NEXT;
	/* Generated by the node itself (kubelet probes): not captured, as in Istio ambient. */
	if (skb->ingress_ifindex == 0)
		return AMBIT_TCX_NEXT;
	v = steer(skb, pod, px, TO_POD);
	/* redirect_peer is not allowed at egress: go out of ztunnel's host veth, into its eth0. */
	return v == STEER_REDIRECT ? bpf_redirect(px->host_ifindex, 0) : v;
}

static __always_inline int assign(struct __sk_buff *skb, struct proxy_config *px, struct bpf_sock *sk, __u32 stat)
{
	long err = bpf_sk_assign(skb, sk, 0);

	bpf_sk_release(sk);
	if (err) {
		bump(STAT_PROXY_NO_SOCKET);
		return AMBIT_TCX_DROP;
	}
	/* The mark selects a policy route that delivers the foreign destination locally. */
	skb->mark = px->tproxy_mark;
	bump(stat);
	return AMBIT_TCX_PASS;
}

SEC("tc")
int proxy_in(struct __sk_buff *skb)
{
	__u32 key = 0;
	struct proxy_config *px = bpf_map_lookup_elem(&proxy_config, &key);
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	struct flow f = {};
	__u32 *src_flags;
	__u16 port;

	if (!px || !px->host_ifindex)
		return AMBIT_TCX_NEXT;
	if (parse(skb, &f) != PARSE_TCP4)
		return AMBIT_TCX_NEXT;
	if (f.ip->daddr == px->proxy_ip)
		return AMBIT_TCX_NEXT; /* addressed to ztunnel itself: ordinary delivery */

	t.ipv4.saddr = f.ip->saddr;
	t.ipv4.daddr = f.ip->daddr;
	t.ipv4.sport = f.th->source;
	t.ipv4.dport = f.th->dest;
	sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (sk) {
		if (sk->state != BPF_TCP_LISTEN)
			return assign(skb, px, sk, STAT_ASSIGN_ESTAB);
		bpf_sk_release(sk);
	}

	/* A new flow: outbound when it comes from an enrolled pod of this node, else inbound. */
	src_flags = bpf_map_lookup_elem(&pods_by_ip, &f.ip->saddr);
	if (src_flags && (*src_flags & POD_F_ENABLED))
		port = px->out_port;
	else if (f.th->dest == bpf_htons(px->hbone_port))
		port = px->hbone_port;
	else
		port = px->in_port;
	__builtin_memset(&t, 0, sizeof(t));
	t.ipv4.dport = bpf_htons(port);
	sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk) {
		bump(STAT_PROXY_NO_SOCKET);
		return (px->flags & PROXY_F_FAIL_OPEN) ? AMBIT_TCX_NEXT : AMBIT_TCX_DROP;
	}
	if (sk->state != BPF_TCP_LISTEN) {
		bpf_sk_release(sk);
		bump(STAT_PROXY_NO_SOCKET);
		return (px->flags & PROXY_F_FAIL_OPEN) ? AMBIT_TCX_NEXT : AMBIT_TCX_DROP;
	}
	return assign(skb, px, sk, STAT_ASSIGN_LISTENER);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
