#ifndef CCONNTRACK_H
#define CCONNTRACK_H
/*
 * libnetfilter_conntrack for Swift.
 *
 * <netinet/in.h> and the kernel's nfnetlink header come first: libnfnetlink ships an older copy of
 * <linux/netfilter/nfnetlink.h> under the same include guard, and whichever is seen first wins.
 * Seeing the kernel's keeps this module compatible with CNftnl when both are imported.
 */
#include <netinet/in.h>
#include <linux/netfilter/nfnetlink.h>
#include <libnetfilter_conntrack/libnetfilter_conntrack.h>
#include <stdint.h>

/* NF_NETLINK_CONNTRACK_NEW | NF_NETLINK_CONNTRACK_DESTROY: Swift cannot import the compat macros
 * through libnfnetlink's headers reliably, so the groups Cordon subscribes to are named here. */
extern const unsigned int CConntrack_groupsNewDestroy;

/* NFCT_CB_CONTINUE / NFCT_CB_STOP are enum values, but their enum is anonymous in older headers;
 * named here so the Swift callback does not depend on that. */
extern const int CConntrack_callbackContinue;
extern const int CConntrack_callbackStop;

#endif
