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

/* NFCT_CB_CONTINUE is an enum value, but its enum is anonymous in older headers; named here so
 * the Swift callback does not depend on that. */
extern const int CConntrack_callbackContinue;

/* Receives up to `count` netlink datagrams with one recvmmsg(2) call, without waiting: datagram i
 * lands in `buffers[i]` (each `size` bytes long) and its length in `lengths[i]`; a datagram cut
 * short by the buffer gets length 0. Returns how many arrived, or -1 with errno (EAGAIN when none
 * is queued, ENOBUFS when the kernel dropped events). recvmmsg is a GNU extension that Swift's
 * Glibc module does not import; one call per batch instead of per event is most of the intake cost. */
int CConntrack_receiveBatch(int fd, void *const *buffers, size_t size, unsigned int *lengths, unsigned int count);

/* True when a conntrack event message reports a destroyed entry (IPCTNL_MSG_CT_DELETE) rather
 * than a new one; the message type packs subsystem and message in one field. */
int CConntrack_isDestroy(const void *message);

#endif
