"""Incoming traffic in the target's network namespace: iptables rules that redirect (steal)
or a packet capture that copies (mirror) connections to the target's ports, handed to the
client as streams; the HTTP-filtering proxy under http/ picks the stolen requests by filter."""
