#include "CNftnl.h"
#include <unistd.h>

const unsigned int CNftnl_addressGroups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;


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
