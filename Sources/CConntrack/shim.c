#include "CConntrack.h"

const unsigned int CConntrack_groupsNewDestroy = NF_NETLINK_CONNTRACK_NEW | NF_NETLINK_CONNTRACK_DESTROY;
const int CConntrack_callbackContinue = NFCT_CB_CONTINUE;
const int CConntrack_callbackStop = NFCT_CB_STOP;
