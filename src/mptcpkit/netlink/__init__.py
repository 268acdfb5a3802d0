"""mptcpkit.netlink."""
