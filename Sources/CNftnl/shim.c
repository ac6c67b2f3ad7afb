#include "CNftnl.h"
#include <unistd.h>

size_t CNftnl_socketBufferSize(void) { return MNL_SOCKET_BUFFER_SIZE; }

const unsigned int CNftnl_addressGroups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;

const uint32_t CNftnl_ctStateEstablishedRelated =
    NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED);

int CNftnl_errorCode(const struct nlmsghdr *nlh, uint32_t *failedSeq) {
    const struct nlmsgerr *err = mnl_nlmsg_get_payload(nlh);
    if (failedSeq) *failedSeq = err->msg.nlmsg_seq;
    return err->error;
}

uint32_t CNftnl_generationPid(const struct nlmsghdr *nlh) {
    const struct nlattr *attr;
    mnl_attr_for_each(attr, nlh, sizeof(struct nfgenmsg)) {
        if (mnl_attr_get_type(attr) == NFTA_GEN_PROC_PID && mnl_attr_get_payload_len(attr) >= 4)
            return ntohl(mnl_attr_get_u32(attr));
    }
    return 0;
}
