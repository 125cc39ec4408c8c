package network

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"strings"
)

// DNS is a container's resolver configuration; empty fields take the
// host's.
type DNS struct {
	Servers []string
	Search  []string
	Options []string
}

// dockerDNS are the nameservers Docker falls back to when the host has
// none a container can reach.
var dockerDNS = []string{"8.8.8.8", "8.8.4.4"}

// ResolvConf is a container's /etc/resolv.conf from the host's: with
// its own network namespace, the host's loopback nameservers (a local
// stub resolver such as systemd-resolved's) cannot be reached from it,
// so they go, and when none is left Docker's defaults stand in (Google's
// public DNS). dns's fields replace the host's.
func ResolvConf(host []byte, dns DNS) []byte {
	var servers, search, options []string
	sc := bufio.NewScanner(bytes.NewReader(host))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || strings.HasPrefix(f[0], "#") || strings.HasPrefix(f[0], ";") {
			continue
		}
		switch f[0] {
		case "nameserver":
			if a, err := netip.ParseAddr(f[1]); err == nil && !a.IsLoopback() {
				servers = append(servers, f[1])
			}
		case "search", "domain":
			search = f[1:]
		case "options":
			options = append(options, f[1:]...)
		}
	}
	if len(dns.Servers) > 0 {
		servers = dns.Servers
	} else if len(servers) == 0 {
		servers = dockerDNS
	}
	if len(dns.Search) > 0 {
		search = dns.Search
	}
	if len(dns.Options) > 0 {
		options = dns.Options
	}
	var b bytes.Buffer
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	if len(options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(options, " "))
	}
	return b.Bytes()
}

// HostEntry is an /etc/hosts line: a name for an address (--add-host).
type HostEntry struct {
	Host string
	IP   string
}

// Hosts is a container's /etc/hosts: the localhost lines, hostname on each
// of the container's ips, then extra.
func Hosts(hostname string, ips []string, extra []HostEntry) []byte {
	var b bytes.Buffer
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	for _, ip := range ips {
		if hostname != "" {
			fmt.Fprintf(&b, "%s\t%s\n", ip, hostname)
		}
	}
	b.Write(ExtraHosts(extra))
	return b.Bytes()
}

// ExtraHosts are extra's /etc/hosts lines.
func ExtraHosts(extra []HostEntry) []byte {
	var b bytes.Buffer
	for _, e := range extra {
		fmt.Fprintf(&b, "%s\t%s\n", e.IP, e.Host)
	}
	return b.Bytes()
}
