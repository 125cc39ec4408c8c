package main

import (
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keel-runtime/keel/client/cio"
	"github.com/keel-runtime/keel/client/oci"
)

// secFlags are `keel run`'s and `keel container create`'s capability,
// device, security-opt, env-file and init flags.
type secFlags struct {
	envFiles     []string
	capAdd       []string
	capDrop      []string
	devices      []string
	securityOpts []string
	init         bool
}

func (f *secFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringArrayVar(&f.envFiles, "env-file", nil, "read environment variables from FILE: KEY=VALUE lines, # comments, a bare KEY takes keel's own value (repeatable; --env wins)")
	fl.StringArrayVar(&f.capAdd, "cap-add", nil, "add a capability (NET_ADMIN or CAP_NET_ADMIN; ALL for every one) (repeatable)")
	fl.StringArrayVar(&f.capDrop, "cap-drop", nil, "drop a capability (ALL for every one; --cap-add then adds back) (repeatable)")
	fl.StringArrayVar(&f.devices, "device", nil, "give a host device: HOST[:CONTAINER][:PERMISSIONS], permissions some of rwm (repeatable)")
	fl.StringArrayVar(&f.securityOpts, "security-opt", nil, "seccomp=unconfined, seccomp=PROFILE.json (Docker's format), no-new-privileges[=false], systempaths=unconfined (repeatable)")
	fl.BoolVar(&f.init, "init", false, "run tini ("+oci.DefaultInit+", Debian's tini package) as PID 1: it forwards signals and reaps zombies")
}

// envOpts are the env files' options, to come before --env's.
func (f *secFlags) envOpts() []oci.SpecOpt {
	var opts []oci.SpecOpt
	for _, p := range f.envFiles {
		opts = append(opts, oci.WithEnvFile(p))
	}
	return opts
}

// specOpts are the other flags' options. They come before --privileged's,
// which, as Docker's, overrides the capability and seccomp choices.
// Without --security-opt seccomp=…, the spec gets Docker's default
// profile (oci.GenerateSpec).
func (f *secFlags) specOpts() ([]oci.SpecOpt, error) {
	var opts []oci.SpecOpt
	if len(f.capAdd) > 0 || len(f.capDrop) > 0 {
		opts = append(opts, oci.WithCapabilities(f.capAdd, f.capDrop))
	}
	var devs []oci.Device
	for _, s := range f.devices {
		d, err := oci.ParseDevice(s)
		if err != nil {
			return nil, err
		}
		devs = append(devs, d)
	}
	if len(devs) > 0 {
		opts = append(opts, oci.WithDevices(devs...))
	}
	for _, s := range f.securityOpts {
		o, err := oci.SecurityOpt(s)
		if err != nil {
			return nil, err
		}
		opts = append(opts, o)
	}
	if f.init {
		opts = append(opts, oci.WithInit(""))
	}
	return opts, nil
}

// afterPrivileged are the options that stand even with --privileged:
// an explicit no-new-privileges, which Docker keeps on a privileged
// container too.
func (f *secFlags) afterPrivileged() ([]oci.SpecOpt, error) {
	var opts []oci.SpecOpt
	for _, s := range f.securityOpts {
		if k, _, _ := strings.Cut(strings.Replace(s, ":", "=", 1), "="); k != "no-new-privileges" {
			continue
		}
		o, err := oci.SecurityOpt(s)
		if err != nil {
			return nil, err
		}
		opts = append(opts, o)
	}
	return opts, nil
}

// registerInteractive adds -i/--interactive to a command that starts a
// process: without it the process gets no stdin (EOF at once), as with
// Docker and nerdctl; with -t but no -i it has a terminal nobody types in.
func registerInteractive(cmd *cobra.Command, o *taskIOFlags) {
	cmd.Flags().BoolVarP(&o.stdin, "interactive", "i", false, "pass keel's stdin to the process (default: none)")
}

// stdio is the process's streams: keel's stdout and stderr, and its stdin
// only when asked.
func (o taskIOFlags) stdio() cio.Opt {
	if o.stdin {
		return cio.WithStdio
	}
	return cio.WithStreams(nil, os.Stdout, os.Stderr)
}
