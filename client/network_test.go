package client

import "testing"

func TestParsePortMapping(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want PortMapping
		ok   bool
	}{
		{"8080:80", PortMapping{HostPort: 8080, ContainerPort: 80}, true},
		{"127.0.0.1:8080:80/tcp", PortMapping{HostIP: "127.0.0.1", HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}, true},
		{"[::1]:53:53/udp", PortMapping{HostIP: "::1", HostPort: 53, ContainerPort: 53, Protocol: "udp"}, true},
		{"80", PortMapping{}, false},
		{"0:80", PortMapping{}, false},
		{"8080:70000", PortMapping{}, false},
		{"8080:80/sctp", PortMapping{}, false},
		{"nohost:8080:80", PortMapping{}, false},
	} {
		got, err := ParsePortMapping(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParsePortMapping(%q) = %+v, %v", tc.in, got, err)
		}
	}
	if s := (PortMapping{HostIP: "127.0.0.1", HostPort: 8080, ContainerPort: 80}).String(); s != "127.0.0.1:8080->80/tcp" {
		t.Errorf("String: %q", s)
	}
}

func TestHostname(t *testing.T) {
	for in, want := range map[string]string{
		"web":       "web",
		"my_app.v2": "my-app-v2",
		"-x-":       "x",
		"a234567890123456789012345678901234567890123456789012345678901234567890": "a23456789012345678901234567890123456789012345678901234567890123",
	} {
		if got := Hostname(in); got != want {
			t.Errorf("Hostname(%q) = %q, want %q", in, got, want)
		}
	}
}
