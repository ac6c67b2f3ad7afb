#define _GNU_SOURCE
#include <sys/socket.h>
#include <errno.h>
#include <stddef.h>
#include "CConntrack.h"

const unsigned int CConntrack_groupsNewDestroy = NF_NETLINK_CONNTRACK_NEW | NF_NETLINK_CONNTRACK_DESTROY;
const int CConntrack_callbackContinue = NFCT_CB_CONTINUE;

int CConntrack_receiveBatch(int fd, void *const *buffers, size_t size, unsigned int *lengths, unsigned int count) {
    struct mmsghdr messages[count];
    struct iovec vectors[count];
    for (unsigned int i = 0; i < count; i++) {
        vectors[i].iov_base = buffers[i];
        vectors[i].iov_len = size;
        messages[i].msg_hdr = (struct msghdr){ .msg_iov = &vectors[i], .msg_iovlen = 1 };
        messages[i].msg_len = 0;
    }
    int received;
    do {
        received = recvmmsg(fd, messages, count, MSG_DONTWAIT, NULL);
    } while (received < 0 && errno == EINTR);
    for (int i = 0; i < received; i++) {
        lengths[i] = (messages[i].msg_hdr.msg_flags & MSG_TRUNC) ? 0 : messages[i].msg_len;
    }
    return received;
}

int CConntrack_isDestroy(const void *message) {
    const struct nlmsghdr *header = message;
    return (header->nlmsg_type & 0xff) == IPCTNL_MSG_CT_DELETE;
}
