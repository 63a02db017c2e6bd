// Package netnsrun runs a function on an OS thread moved into a network
// namespace, and only there: the one place Shoal switches a thread's
// namespace (the node network, the overlay, the DNS servers inside task
// namespaces and their tests all call it). Sockets keep the namespace
// they were made in, so fn typically opens a socket or netlink handle
// that any goroutine may use afterwards. It imports nothing of Shoal.
package netnsrun
