package network

import "testing"

func TestResolvConf(t *testing.T) {
	host := "# generated\nnameserver 127.0.0.53\nnameserver 192.0.2.1\nsearch a.test b.test\noptions edns0 trust-ad\n"
	for _, tc := range []struct {
		name, host string
		dns        DNS
		want       string
	}{
		{"loopback servers go", host, DNS{}, "nameserver 192.0.2.1\nsearch a.test b.test\noptions edns0 trust-ad\n"},
		{"only loopback: Docker's", "nameserver 127.0.0.1\nnameserver ::1\n", DNS{}, "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"},
		{"no file", "", DNS{}, "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"},
		{"--dns replaces servers", host, DNS{Servers: []string{"192.0.2.53"}}, "nameserver 192.0.2.53\nsearch a.test b.test\noptions edns0 trust-ad\n"},
		{"search and options", host, DNS{Search: []string{"c.test"}, Options: []string{"ndots:2"}}, "nameserver 192.0.2.1\nsearch c.test\noptions ndots:2\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(ResolvConf([]byte(tc.host), tc.dns)); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestHosts(t *testing.T) {
	got := string(Hosts("web", []string{"10.7.0.2", "10.7.1.2"}, []HostEntry{{Host: "db", IP: "192.0.2.7"}}))
	want := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.7.0.2\tweb\n10.7.1.2\tweb\n192.0.2.7\tdb\n"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestParseSubnet(t *testing.T) {
	for _, tc := range []struct {
		subnet, gateway, wantGW string
		ok                      bool
	}{
		{"10.7.1.0/24", "", "10.7.1.1", true},
		{"10.7.1.0/24", "10.7.1.254", "10.7.1.254", true},
		{"10.7.1.0/24", "10.7.2.1", "", false},
		{"10.7.1.0/24", "10.7.1.0", "", false},
		{"10.7.1.5/24", "", "", false},
		{"10.7.1.0/31", "", "", false},
		{"fd00:7::/64", "", "fd00:7::1", true},
		{"nonsense", "", "", false},
	} {
		_, gw, err := ParseSubnet(tc.subnet, tc.gateway)
		if (err == nil) != tc.ok || tc.ok && gw.String() != tc.wantGW {
			t.Errorf("ParseSubnet(%q, %q) = %v, %v", tc.subnet, tc.gateway, gw, err)
		}
	}
}
