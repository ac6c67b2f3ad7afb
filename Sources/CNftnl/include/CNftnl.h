#ifndef CNFTNL_H
#define CNFTNL_H
/*
 * libnftnl and libmnl for Swift (nf_tables, and rtnetlink address notifications through libmnl).
 *
 * libnftnl's headers do not include the kernel headers they rely on, and <sys/uio.h> must precede
 * libnftnl/batch.h (it uses struct iovec). The order below is the one that compiles.
 */
#include <netinet/in.h>
#include <sys/uio.h>
#include <sys/socket.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <libmnl/libmnl.h>
#include <libnftnl/batch.h>
#include <libnftnl/common.h>
#include <libnftnl/table.h>
#include <libnftnl/chain.h>
#include <libnftnl/rule.h>
#include <libnftnl/expr.h>
#include <libnftnl/set.h>
#include <libnftnl/gen.h>
#include <stdint.h>
#include <stddef.h>

/* RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR: the legacy group bits are macros of an enum Swift
 * imports with a different type on each libc; named once here. */
extern const unsigned int CNftnl_addressGroups;

/* Netlink error messages carry the errno and the header of the message that failed; reading the
 * struct through a helper keeps the pointer arithmetic in C, where the layout is defined. */
int CNftnl_errorCode(const struct nlmsghdr *nlh, uint32_t *failedSeq);

/* nfnetlink_log (packets nftables logs to an NFLOG group): its message, attribute and copy-mode
 * numbers import as they are; it relies on nfnetlink.h, included above. */
#include <linux/netfilter/nfnetlink_log.h>

/* nfnetlink_queue (packets a `queue` rule hands to the agent, which returns a verdict). */
#include <linux/netfilter/nfnetlink_queue.h>

/* The process id in an NFT_MSG_NEWGEN notification (NFTA_GEN_PROC_PID): who committed the
 * transaction that made this generation; 0 when absent. Attribute iteration is macros in libmnl. */
uint32_t CNftnl_generationPid(const struct nlmsghdr *nlh);

#endif
