"""mptcpkit.lab.report."""
