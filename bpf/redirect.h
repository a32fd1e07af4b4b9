/* Layouts shared by the eBPF programs (redirect.bpf.c) and their user-space writers. The TypeScript
 * encoders in bpf/maps.ts mirror these byte for byte; the agent checks the map value sizes the
 * kernel reports against them before writing anything. */
#ifndef AMBIT_REDIRECT_H
#define AMBIT_REDIRECT_H

#include <linux/types.h>

/* tcx return codes (include/uapi/linux/bpf.h, kernel >= 6.6; bookworm's uapi predates them). */
#define AMBIT_TCX_NEXT (-1)
#define AMBIT_TCX_PASS 0
#define AMBIT_TCX_DROP 2
#define AMBIT_TCX_REDIRECT 7

/* pod_state.flags */
#define POD_F_ENABLED 0x1 /* new connections of this pod go to the node's ztunnel */

/* Value of pods_by_ifindex, keyed by the ifindex of the pod's host-side veth. */
struct pod_state {
	__u32 ip;    /* pod IPv4, network byte order */
	__u32 flags; /* POD_F_* */
};

/* proxy_config.flags */
#define PROXY_F_FAIL_OPEN 0x1 /* ztunnel not listening: let new connections go direct (default: drop) */

/* The single entry of proxy_config: where the node's ztunnel is. All zero = not configured yet. */
struct proxy_config {
	__u32 proxy_ip;     /* ztunnel eth0 IPv4, network byte order */
	__u32 host_ifindex; /* ifindex of ztunnel's host-side veth, in the node's netns */
	__u8 proxy_mac[6];  /* MAC of ztunnel's eth0 */
	__u16 out_port;     /* outbound capture listener (15001), host order */
	__u16 in_port;      /* inbound plaintext capture listener (15006) */
	__u16 hbone_port;   /* inbound HBONE listener (15008); also the port that selects it */
	__u32 flags;        /* PROXY_F_* */
	__u32 tproxy_mark;  /* mark that a policy route in ztunnel's netns turns into local delivery */
	__s32 proxy_nsid;   /* ztunnel's netns id as seen from the node's netns; < 0 = stateless mode */
};

/* Indexes of the per-CPU counters in the stats map. */
enum ambit_stat {
	STAT_OUT_REDIRECT = 0,    /* from_pod: packet sent to ztunnel */
	STAT_IN_REDIRECT = 1,     /* to_pod: packet sent to ztunnel */
	STAT_ASSIGN_ESTAB = 2,    /* proxy_in: assigned to an existing ztunnel socket */
	STAT_ASSIGN_LISTENER = 3, /* proxy_in: new flow assigned to a listener */
	STAT_DROP_NO_PROXY = 4,   /* fail-closed drop: ztunnel not listening (or not configured) */
	STAT_DROP_UNSUPPORTED = 5,/* enrolled pod's TCP we cannot capture (IPv6, fragments): dropped */
	STAT_PASS_DIRECT = 6,     /* enrolled pod's packet of a flow ztunnel does not own: left alone */
	STAT_PROXY_NO_SOCKET = 7, /* proxy_in: no socket and no listener for a redirected packet */
	STAT_MAX = 8,
};

#endif
