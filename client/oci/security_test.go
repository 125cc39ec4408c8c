package oci

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// allows tells whether profile p lets syscall name through (no argument
// conditions).
func allows(p *specs.LinuxSeccomp, name string) bool {
	for _, sc := range p.Syscalls {
		if sc.Action == specs.ActAllow && len(sc.Args) == 0 && slices.Contains(sc.Names, name) {
			return true
		}
	}
	return false
}

// writeFile writes data to a new file name and returns its path.
func writeFile(t *testing.T, name, data string) string {
	t.Helper()
	return filepath.Join(writeRootfs(t, map[string]string{name: data}), name)
}

const denyKeyctl = `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
  {"names": ["keyctl"], "action": "SCMP_ACT_ERRNO"},
  {"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "excludes": {"caps": ["CAP_SYS_ADMIN"]}}
]}`

// TestSeccomp: the default profile, made from the final capabilities
// whatever the options' order; unconfined, privileged and a profile file.
func TestSeccomp(t *testing.T) {
	profile := writeFile(t, "p.json", denyKeyctl)
	for _, tc := range []struct {
		name  string
		opts  []SpecOpt
		check func(*testing.T, *specs.LinuxSeccomp)
	}{
		{"default", nil, func(t *testing.T, p *specs.LinuxSeccomp) {
			if p == nil || p.DefaultAction != specs.ActErrno || !allows(p, "read") || allows(p, "unshare") || allows(p, "keyctl") {
				t.Fatalf("not Docker's default: %+v", p)
			}
		}},
		{"cap added after", []SpecOpt{WithCapabilities([]string{"SYS_ADMIN"}, nil)}, func(t *testing.T, p *specs.LinuxSeccomp) {
			if !allows(p, "unshare") || !allows(p, "mount") {
				t.Error("CAP_SYS_ADMIN's calls not allowed")
			}
		}},
		{"default before the cap", []SpecOpt{WithDefaultSeccomp, WithCapabilities([]string{"SYS_ADMIN"}, nil)}, func(t *testing.T, p *specs.LinuxSeccomp) {
			if !allows(p, "unshare") {
				t.Error("profile made before the last capability change")
			}
		}},
		{"unconfined", []SpecOpt{WithSeccompUnconfined}, func(t *testing.T, p *specs.LinuxSeccomp) {
			if p != nil {
				t.Error("unconfined has a profile")
			}
		}},
		{"privileged", []SpecOpt{WithPrivileged}, func(t *testing.T, p *specs.LinuxSeccomp) {
			if p != nil {
				t.Error("privileged has a profile")
			}
		}},
		{"last choice wins", []SpecOpt{WithSeccompUnconfined, WithDefaultSeccomp}, func(t *testing.T, p *specs.LinuxSeccomp) {
			if p == nil {
				t.Error("no profile")
			}
		}},
		{"profile file", []SpecOpt{WithSeccompProfileFile(profile)}, func(t *testing.T, p *specs.LinuxSeccomp) {
			if p.DefaultAction != specs.ActAllow || len(p.Syscalls) != 2 {
				t.Errorf("profile %+v", p)
			}
		}},
		{"profile file, cap excludes a rule", []SpecOpt{WithSeccompProfileFile(profile), WithCapabilities([]string{"sys_admin"}, nil)}, func(t *testing.T, p *specs.LinuxSeccomp) {
			if len(p.Syscalls) != 1 || p.Syscalls[0].Names[0] != "keyctl" {
				t.Errorf("profile %+v", p.Syscalls)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := GenerateSpec(t.Context(), tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, s.Linux.Seccomp)
		})
	}
}

// TestSeccompByHand: outside GenerateSpec the options apply at once.
func TestSeccompByHand(t *testing.T) {
	s, err := GenerateSpec(t.Context(), WithSeccompUnconfined)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := WithDefaultSeccomp(ctx, s); err != nil || s.Linux.Seccomp == nil || allows(s.Linux.Seccomp, "unshare") {
		t.Fatalf("default by hand: %v", err)
	}
	if err := WithSeccompUnconfined(ctx, s); err != nil || s.Linux.Seccomp != nil {
		t.Fatalf("unconfined by hand: %v", err)
	}
	// A spec with no capabilities at all.
	bare := &Spec{Process: &specs.Process{}}
	if err := WithDefaultSeccomp(ctx, bare); err != nil || bare.Linux.Seccomp == nil {
		t.Fatalf("bare spec: %v", err)
	}
}

// TestSeccompBad: a bad profile names its file and what is wrong.
func TestSeccompBad(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, data, want string
	}{
		{"empty.json", "", "unexpected end of JSON"},
		{"bad.json", "{not json", "invalid character"},
		{"list.json", "[]", "cannot unmarshal array"},
		{"nothing.json", "{}", "no defaultAction and no syscalls"},
		{"action.json", `{"defaultAction": "SCMP_ACT_NOPE"}`, `defaultAction "SCMP_ACT_NOPE"`},
		{"rule.json", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "ALLOW"}]}`, `syscalls [read]: action "ALLOW"`},
		{"nonames.json", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]}`, "no names"},
		{"both.json", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"name": "read", "names": ["write"], "action": "SCMP_ACT_ALLOW"}]}`, "both 'name' and 'names'"},
	} {
		p := filepath.Join(dir, tc.name)
		if err := os.WriteFile(p, []byte(tc.data), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := GenerateSpec(t.Context(), WithSeccompProfileFile(p))
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want InvalidArgument naming the file and %q", tc.name, err, tc.want)
		}
	}
	for _, p := range []string{filepath.Join(dir, "missing.json"), "/dev/zero", dir} {
		if _, err := GenerateSpec(t.Context(), WithSeccompProfileFile(p)); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v, want InvalidArgument naming it", p, err)
		}
	}
}

func TestCapabilityName(t *testing.T) {
	for in, want := range map[string]string{
		"net_admin": "CAP_NET_ADMIN", "NET_ADMIN": "CAP_NET_ADMIN", "cap_net_admin": "CAP_NET_ADMIN",
		"CAP_SYS_ADMIN": "CAP_SYS_ADMIN", "all": "ALL", " chown ": "CAP_CHOWN",
	} {
		if got, err := CapabilityName(in); err != nil || got != want {
			t.Errorf("%q: %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "CAP_", "NOPE", "CAP_ALL", "net admin", "cap_net_admin\x00"} {
		if _, err := CapabilityName(bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%q: %v, want InvalidArgument", bad, err)
		}
	}
}

func TestWithCapabilities(t *testing.T) {
	for _, tc := range []struct {
		name       string
		add, drop  []string
		has, hasnt []string
		n          int // the set's size; 0 for any
	}{
		{name: "drop one", drop: []string{"chown"}, has: []string{"CAP_KILL"}, hasnt: []string{"CAP_CHOWN"}},
		{name: "add one", add: []string{"NET_ADMIN"}, has: []string{"CAP_NET_ADMIN", "CAP_CHOWN"}},
		{name: "drop all", drop: []string{"ALL"}, hasnt: []string{"CAP_CHOWN", "CAP_KILL"}},
		{name: "drop all add one", add: []string{"kill"}, drop: []string{"all"}, has: []string{"CAP_KILL"}, n: 1},
		{name: "add all drop one", add: []string{"ALL"}, drop: []string{"SYS_ADMIN"}, has: []string{"CAP_CHOWN"}, hasnt: []string{"CAP_SYS_ADMIN"}, n: len(hostCapabilities()) - 1},
		{name: "add twice", add: []string{"kill", "CAP_KILL"}, n: 14},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := GenerateSpec(t.Context(), WithCapabilities(tc.add, tc.drop))
			if err != nil {
				t.Fatal(err)
			}
			c := s.Process.Capabilities
			for _, set := range [][]string{c.Bounding, c.Effective, c.Permitted} {
				for _, h := range tc.has {
					if !slices.Contains(set, h) {
						t.Errorf("%s missing from %v", h, set)
					}
				}
				for _, h := range tc.hasnt {
					if slices.Contains(set, h) {
						t.Errorf("%s in %v", h, set)
					}
				}
				if tc.n != 0 && len(set) != tc.n {
					t.Errorf("%d capabilities, want %d: %v", len(set), tc.n, set)
				}
			}
		})
	}
	for _, bad := range []SpecOpt{WithCapabilities([]string{"nope"}, nil), WithCapabilities(nil, []string{""}), WithCapabilities([]string{"ALL"}, []string{"ALL"})} {
		if _, err := GenerateSpec(t.Context(), bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("bad capabilities: %v, want InvalidArgument", err)
		}
	}
}

func TestParseDevice(t *testing.T) {
	for in, want := range map[string]Device{
		"/dev/null":              {Host: "/dev/null"},
		"/dev/null:/dev/mynull":  {Host: "/dev/null", Container: "/dev/mynull"},
		"/dev/null:rw":           {Host: "/dev/null", Permissions: "rw"},
		"/dev/null:/dev/x:r":     {Host: "/dev/null", Container: "/dev/x", Permissions: "r"},
		"/dev/fuse:/dev/fuse:mr": {Host: "/dev/fuse", Container: "/dev/fuse", Permissions: "mr"},
	} {
		if got, err := ParseDevice(in); err != nil || got != want {
			t.Errorf("%q: %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "dev/null", "/dev/null:rel", "/dev/null:/x:rwx", "/dev/null:/x:rr", "/dev/null:/x:", "/a:/b:r:w", ":/x"} {
		if _, err := ParseDevice(bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%q: %v, want InvalidArgument", bad, err)
		}
	}
}

func TestWithDevices(t *testing.T) {
	s, err := GenerateSpec(t.Context(), WithDevices(Device{Host: "/dev/null", Container: "/dev/mynull", Permissions: "rw"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Linux.Devices) != 1 {
		t.Fatalf("devices %+v", s.Linux.Devices)
	}
	d := s.Linux.Devices[0]
	if d.Path != "/dev/mynull" || d.Type != "c" || d.Major != 1 || d.Minor != 3 || *d.FileMode != 0o666 {
		t.Errorf("device %+v", d)
	}
	rules := s.Linux.Resources.Devices
	last := rules[len(rules)-1]
	if rules[0].Allow || !last.Allow || last.Type != "c" || *last.Major != 1 || *last.Minor != 3 || last.Access != "rw" {
		t.Errorf("cgroup rules %+v", rules)
	}
	regular := writeFile(t, "f", "")
	for _, d := range []Device{{Host: regular}, {Host: t.TempDir()}, {Host: "/dev/no-such-device"}, {Host: "rel"}} {
		if _, err := GenerateSpec(t.Context(), WithDevices(d)); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%+v: %v, want InvalidArgument", d, err)
		}
	}
}

func TestSecurityOpt(t *testing.T) {
	profile := writeFile(t, "p.json", denyKeyctl)
	for _, tc := range []struct {
		opt   string
		check func(*Spec) bool
	}{
		{"seccomp=unconfined", func(s *Spec) bool { return s.Linux.Seccomp == nil }},
		{"seccomp:unconfined", func(s *Spec) bool { return s.Linux.Seccomp == nil }},
		{"seccomp=builtin", func(s *Spec) bool { return s.Linux.Seccomp != nil && s.Linux.Seccomp.DefaultAction == specs.ActErrno }},
		{"seccomp=" + profile, func(s *Spec) bool { return s.Linux.Seccomp.DefaultAction == specs.ActAllow }},
		{"no-new-privileges", func(s *Spec) bool { return s.Process.NoNewPrivileges }},
		{"no-new-privileges=false", func(s *Spec) bool { return !s.Process.NoNewPrivileges }},
		{"no-new-privileges:true", func(s *Spec) bool { return s.Process.NoNewPrivileges }},
		{"systempaths=unconfined", func(s *Spec) bool { return len(s.Linux.MaskedPaths) == 0 && len(s.Linux.ReadonlyPaths) == 0 }},
	} {
		o, err := SecurityOpt(tc.opt)
		if err != nil {
			t.Errorf("%s: %v", tc.opt, err)
			continue
		}
		s, err := GenerateSpec(t.Context(), o)
		if err != nil || !tc.check(s) {
			t.Errorf("%s: %v, spec not as asked", tc.opt, err)
		}
	}
	for opt, want := range map[string]string{
		"":                      "empty",
		"seccomp":               "want seccomp=unconfined",
		"seccomp=":              "want seccomp=unconfined",
		"apparmor=unconfined":   "no AppArmor or SELinux",
		"label=disable":         "no AppArmor or SELinux",
		"no-new-privileges=yes": "want true or false",
		"systempaths=masked":    "systempaths=unconfined",
		"bogus=1":               "unknown option",
	} {
		_, err := SecurityOpt(opt)
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want InvalidArgument with %q", opt, err, want)
		}
	}
}

func TestWithInit(t *testing.T) {
	bin := writeFile(t, "init", "#!/bin/true\n")
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	// Given before the command, it still wraps the final one.
	s, err := GenerateSpec(t.Context(), WithInit(bin), WithProcessArgs("sleep", "1"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Process.Args, []string{InitPath, "--", "sleep", "1"}) {
		t.Errorf("args %v", s.Process.Args)
	}
	m := s.Mounts[len(s.Mounts)-1]
	if m.Destination != InitPath || m.Source != bin || !slices.Contains(m.Options, "ro") {
		t.Errorf("mount %+v", m)
	}
	notExec := writeFile(t, "plain", "")
	for _, tc := range []struct {
		opts []SpecOpt
		want func(error) bool
	}{
		{[]SpecOpt{WithInit(filepath.Join(t.TempDir(), "no-tini")), WithProcessArgs("x")}, errdefs.IsFailedPrecondition},
		{[]SpecOpt{WithInit(notExec), WithProcessArgs("x")}, errdefs.IsFailedPrecondition},
		{[]SpecOpt{WithInit(bin)}, errdefs.IsInvalidArgument},
	} {
		if _, err := GenerateSpec(t.Context(), tc.opts...); !tc.want(err) {
			t.Errorf("%v: wrong error class", err)
		}
	}
}

func TestWithEnvFile(t *testing.T) {
	p := writeFile(t, "env", "A=1\nB=2\n")
	s, err := GenerateSpec(t.Context(), WithEnv("A=0", "C=3"), WithEnvFile(p))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(s.Process.Env, "A=1") || !slices.Contains(s.Process.Env, "B=2") || !slices.Contains(s.Process.Env, "C=3") {
		t.Errorf("env %v", s.Process.Env)
	}
	for _, p := range []string{filepath.Join(t.TempDir(), "nope"), "/dev/zero"} {
		if _, err := GenerateSpec(t.Context(), WithEnvFile(p)); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v, want InvalidArgument naming it", p, err)
		}
	}
}

func TestParseEnvFile(t *testing.T) {
	lookup := func(k string) (string, bool) {
		v, ok := map[string]string{"HOSTVAR": "from host", "EMPTY": ""}[k]
		return v, ok
	}
	in := "\xef\xbb\xbf# comment\n\n  A=1\nB=2 \nC=\nD=x=y\n   # indented comment\nHOSTVAR\nEMPTY\nUNSET\nQ=\"quoted\"\nHOSTVAR  \n"
	got, err := ParseEnvFile(strings.NewReader(in), "f", lookup)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"A=1", "B=2 ", "C=", "D=x=y", "HOSTVAR=from host", "EMPTY=", `Q="quoted"`, "HOSTVAR=from host"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
	for in, wantErr := range map[string]string{
		"A=1\n=2\n":                       "f:2: no variable name",
		"A B=1\n":                         `f:1: variable "A B" has white space`,
		"B =1\n":                          `f:1: variable "B " has white space`,
		"A=1\n\nB\tC\n":                   `f:3: variable "B\tC"`,
		"A=\xff\n":                        "f:1: not UTF-8",
		"A=1\nB=\x00\n":                   "f:2: a NUL byte",
		strings.Repeat("A", maxEnvLine+1): "f:1: bufio.Scanner: token too long",
	} {
		_, err := ParseEnvFile(strings.NewReader(in), "f", lookup)
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "env file "+wantErr) {
			t.Errorf("%.40q: %v, want %q", in, err, wantErr)
		}
	}
}

// FuzzParseEnvFile: whatever the input, each variable is KEY=VALUE with a
// non-empty key free of white space, and no NUL anywhere.
func FuzzParseEnvFile(f *testing.F) {
	for _, seed := range []string{"A=1\n", "# c\n\nB\n", "=x\n", "A B=1", "\xef\xbb\xbfA=1\r\n", "X\n"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		env, err := ParseEnvFile(strings.NewReader(in), "f", func(k string) (string, bool) { return "v", k == "X" })
		if err != nil {
			if !errdefs.IsInvalidArgument(err) || !strings.HasPrefix(err.Error(), "env file f:") {
				t.Fatalf("error %v", err)
			}
			return
		}
		for _, kv := range env {
			k, _, ok := strings.Cut(kv, "=")
			if !ok || k == "" || strings.ContainsAny(k, " \t\r\n\v\f") || strings.ContainsRune(kv, 0) || strings.HasPrefix(k, "#") {
				t.Fatalf("variable %q from %q", kv, in)
			}
		}
	})
}
