// SPDX-License-Identifier: Apache-2.0
/*
 * DWCP XDP steering program.
 *
 * Owns: classifying every received frame as (a) a well-formed DWCP frame to a configured
 * DWCP UDP port, (b) a malformed frame to such a port, or (c) anything else; redirecting (a)
 * to the AF_XDP socket of the receive queue (or, in relay mode, to another interface through
 * a DEVMAP), dropping (b) with a per-reason counter, and passing (c) to the kernel stack
 * untouched.
 *
 * Does not: verify the CRC32C or the AEAD tag (userspace does, on the whole frame), track
 * connections, reassemble IP fragments (fragments pass to the kernel stack), or rewrite
 * any header (relay mode forwards the L2 frame as it arrived).
 *
 * The map layouts here are mirrored by ebpf/src/maps.rs and documented in docs/xdp.md;
 * change all three together.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define DWCP_MAX_PORTS 4
#define DWCP_MAX_QUEUES 64

#define DWCP_HDR_LEN 48
#define DWCP_MAGIC 0xDC57
#define DWCP_FLAG_SEALED 0x0001
#define DWCP_FLAGS_KNOWN 0x0007
#define DWCP_CRC_LEN 4
#define DWCP_TAG_LEN 16

/* dwcp_config.flags */
#define DWCP_CFG_RELAY (1u << 0)

/* IPv6 extension headers skipped on the way to UDP (at most this many). */
#define DWCP_MAX_IPV6_EXT 4

struct dwcp_config {
	__u16 ports[DWCP_MAX_PORTS]; /* host byte order; 0 = slot unused */
	__u32 flags;                 /* DWCP_CFG_* */
	__u32 reserved;              /* 0 */
};

enum dwcp_counter {
	DWCP_C_REDIRECTED_PACKETS = 0,
	DWCP_C_REDIRECTED_BYTES = 1,
	DWCP_C_PASS = 2,
	DWCP_C_DROP_TOO_SHORT = 3,
	DWCP_C_DROP_BAD_MAGIC = 4,
	DWCP_C_DROP_BAD_VERSION = 5,
	DWCP_C_DROP_BAD_TYPE = 6,
	DWCP_C_DROP_RESERVED_BITS = 7,
	DWCP_C_DROP_BAD_LENGTH = 8,
	DWCP_C_NO_SOCKET = 9,
	DWCP_C_RELAYED_PACKETS = 10,
	DWCP_C_RELAYED_BYTES = 11,
	DWCP_C_RELAY_NO_TARGET = 12,
	DWCP_C_COUNT = 13,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dwcp_config);
} dwcp_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, DWCP_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} dwcp_xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} dwcp_relay SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DWCP_C_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} dwcp_counters SEC(".maps");

struct vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

static __always_inline void count(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&dwcp_counters, &idx);

	if (v)
		*v += n;
}

static __always_inline int pass(void)
{
	count(DWCP_C_PASS, 1);
	return XDP_PASS;
}

static __always_inline int drop(__u32 reason)
{
	count(reason, 1);
	return XDP_DROP;
}

static __always_inline int is_dwcp_port(const struct dwcp_config *cfg, __u16 port)
{
	if (port == 0)
		return 0;
#pragma unroll
	for (int i = 0; i < DWCP_MAX_PORTS; i++)
		if (cfg->ports[i] == port)
			return 1;
	return 0;
}

static __always_inline int known_type(__u8 t)
{
	switch (t) {
	case 0x01: /* HELLO */
	case 0x02: /* HELLO_ACK */
	case 0x10: /* DATA */
	case 0x11: /* ACK */
	case 0x12: /* NACK */
	case 0x20: /* PROBE */
	case 0x21: /* PROBE_ACK */
	case 0x30: /* KEEPALIVE */
	case 0x3F: /* CLOSE */
		return 1;
	default:
		return 0;
	}
}

SEC("xdp.frags")
int dwcp_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct dwcp_config *cfg = bpf_map_lookup_elem(&dwcp_config, &zero);

	if (!cfg)
		return pass();

	/* L2: Ethernet with up to two VLAN tags (802.1Q or 802.1ad). */
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return pass();
	__u16 proto = eth->h_proto;
	__u32 off = sizeof(*eth);
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
			struct vlan_hdr *vh = data + off;
			if ((void *)(vh + 1) > data_end)
				return pass();
			proto = vh->encap_proto;
			off += sizeof(*vh);
		}
	}

	/* L3: IPv4 (options allowed, fragments pass) or IPv6 (common extension headers). */
	__u32 l4_off;
	__u32 ip_payload_len;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + off;
		if ((void *)(ip + 1) > data_end)
			return pass();
		if (ip->version != 4 || ip->ihl < 5)
			return pass();
		/* MF set or a non-zero fragment offset: not ours to judge. */
		if (ip->frag_off & bpf_htons(0x3FFF))
			return pass();
		if (ip->protocol != IPPROTO_UDP)
			return pass();
		__u32 ihl = (__u32)ip->ihl * 4;
		__u32 tot = bpf_ntohs(ip->tot_len);
		if (tot < ihl)
			return pass();
		l4_off = off + ihl;
		ip_payload_len = tot - ihl;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + off;
		if ((void *)(ip6 + 1) > data_end)
			return pass();
		__u8 next = ip6->nexthdr;
		__u32 ext = 0;
		__u32 plen = bpf_ntohs(ip6->payload_len);
		l4_off = off + sizeof(*ip6);
#pragma unroll
		for (int i = 0; i < DWCP_MAX_IPV6_EXT; i++) {
			if (next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING &&
			    next != IPPROTO_DSTOPTS && next != IPPROTO_AH)
				break;
			struct ipv6_opt_hdr *h = data + l4_off;
			if ((void *)(h + 1) > data_end)
				return pass();
			__u32 len = next == IPPROTO_AH ? ((__u32)h->hdrlen + 2) * 4
						       : ((__u32)h->hdrlen + 1) * 8;
			next = h->nexthdr;
			l4_off += len;
			ext += len;
		}
		/* Fragment, ESP, no-next-header, too many extensions, or not UDP. */
		if (next != IPPROTO_UDP)
			return pass();
		if (plen < ext)
			return pass();
		ip_payload_len = plen - ext;
	} else {
		return pass();
	}

	/* L4: UDP to one of the configured DWCP ports. */
	l4_off &= 0x3FFF; /* bounds for the verifier; real headers are far shorter */
	struct udphdr *udp = data + l4_off;
	if ((void *)(udp + 1) > data_end)
		return pass();
	if (!is_dwcp_port(cfg, bpf_ntohs(udp->dest)))
		return pass();

	/* From here on the frame claims to be DWCP: it is redirected or dropped. */
	__u64 buff_len = bpf_xdp_get_buff_len(ctx);
	__u32 udp_len = bpf_ntohs(udp->len);
	__u32 dwcp_off = l4_off + sizeof(*udp);
	if (udp_len < sizeof(*udp) + DWCP_HDR_LEN || buff_len < (__u64)dwcp_off + DWCP_HDR_LEN)
		return drop(DWCP_C_DROP_TOO_SHORT);

	__u8 hdr[DWCP_HDR_LEN];
	if (bpf_xdp_load_bytes(ctx, dwcp_off, hdr, sizeof(hdr)) != 0)
		return drop(DWCP_C_DROP_TOO_SHORT);

	if (hdr[0] != (DWCP_MAGIC >> 8) || hdr[1] != (DWCP_MAGIC & 0xFF))
		return drop(DWCP_C_DROP_BAD_MAGIC);
	if (hdr[2] != 1 && hdr[2] != 3)
		return drop(DWCP_C_DROP_BAD_VERSION);
	if (!known_type(hdr[3]))
		return drop(DWCP_C_DROP_BAD_TYPE);
	__u16 flags = ((__u16)hdr[4] << 8) | hdr[5];
	if ((flags & ~DWCP_FLAGS_KNOWN) || hdr[41] || hdr[42] || hdr[43])
		return drop(DWCP_C_DROP_RESERVED_BITS);

	__u64 payload_len = ((__u64)hdr[12] << 24) | ((__u64)hdr[13] << 16) |
			    ((__u64)hdr[14] << 8) | (__u64)hdr[15];
	__u64 trailer = (flags & DWCP_FLAG_SEALED) ? DWCP_TAG_LEN : DWCP_CRC_LEN;
	__u64 udp_payload = udp_len - sizeof(*udp);
	/* The frame must fill the UDP payload exactly, and the UDP datagram must fit in both
	 * the IP payload and the bytes actually received (all fragments of a multi-buffer
	 * frame, hence bpf_xdp_get_buff_len). */
	if (DWCP_HDR_LEN + payload_len + trailer != udp_payload || udp_len > ip_payload_len ||
	    (__u64)l4_off + udp_len > buff_len)
		return drop(DWCP_C_DROP_BAD_LENGTH);

	long act;
	if (cfg->flags & DWCP_CFG_RELAY) {
		act = bpf_redirect_map(&dwcp_relay, 0, XDP_PASS);
		if (act == XDP_REDIRECT) {
			count(DWCP_C_RELAYED_PACKETS, 1);
			count(DWCP_C_RELAYED_BYTES, buff_len);
		} else {
			count(DWCP_C_RELAY_NO_TARGET, 1);
		}
		return act;
	}
	/* No socket on this queue: let the kernel stack have it (a UDP socket on the same
	 * port can serve as the fallback path). */
	act = bpf_redirect_map(&dwcp_xsks, ctx->rx_queue_index, XDP_PASS);
	if (act == XDP_REDIRECT) {
		count(DWCP_C_REDIRECTED_PACKETS, 1);
		count(DWCP_C_REDIRECTED_BYTES, buff_len);
	} else {
		count(DWCP_C_NO_SOCKET, 1);
	}
	return act;
}

char _license[] SEC("license") = "Apache-2.0";
