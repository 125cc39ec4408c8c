package config

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
	ctyjson "github.com/zclconf/go-cty/cty/json"
)

// HCL writes c as a config file, every key with the value c has after
// defaults (keeld config dump): parsed again, it gives c. limits are the
// image limits in effect (the limits block's keys left out take keel's
// defaults, which core/images holds); a plugin's config block is written
// with one attribute per key of its JSON object.
func (c *Config) HCL(limits Limits) ([]byte, error) {
	f := hclwrite.NewEmptyFile()
	b := f.Body()
	str := func(body *hclwrite.Body, k, v string) { body.SetAttributeValue(k, cty.StringVal(v)) }
	num := func(body *hclwrite.Body, k string, v int64) { body.SetAttributeValue(k, cty.NumberIntVal(v)) }
	dur := func(body *hclwrite.Body, k string, d time.Duration) { str(body, k, durationString(d)) }

	str(b, "root", c.Root)
	str(b, "state", c.State)
	str(b, "log_level", c.LogLevel)
	str(b, "log_format", c.LogFormat)
	str(b, "plugin_dir", c.PluginDir)
	num(b, "max_concurrent_downloads", int64(c.MaxConcurrentDownloads))
	if c.DefaultSnapshotter != "" {
		str(b, "default_snapshotter", c.DefaultSnapshotter)
	}

	g := b.AppendNewBlock("grpc", nil).Body()
	str(g, "address", c.GRPC.Address)
	num(g, "uid", int64(c.GRPC.UID))
	num(g, "gid", int64(c.GRPC.GID))

	str(b.AppendNewBlock("metrics", nil).Body(), "address", c.Metrics.Address)

	gc := b.AppendNewBlock("gc", nil).Body()
	dur(gc, "interval", c.GCInterval())
	dur(gc, "ingest_max_age", c.GCIngestMaxAge())

	num(b.AppendNewBlock("events", nil).Body(), "window", int64(c.EventsWindow()))

	l := b.AppendNewBlock("limits", nil).Body()
	num(l, "max_layers", int64(limits.MaxLayers))
	num(l, "max_layer_size", limits.MaxLayerSize)
	num(l, "max_layer_unpacked_size", limits.MaxLayerUnpackedSize)
	num(l, "max_image_unpacked_size", limits.MaxImageUnpackedSize)
	num(l, "max_unpack_ratio", limits.MaxUnpackRatio)
	num(l, "max_manifest_size", limits.MaxManifestSize)
	num(l, "max_index_manifests", int64(limits.MaxIndexManifests))
	num(l, "max_archive_entries", int64(limits.MaxArchiveEntries))

	cl := b.AppendNewBlock("container_logs", nil).Body()
	num(cl, "max_size", c.ContainerLogs.MaxSize)
	num(cl, "max_files", int64(c.ContainerLogs.MaxFiles))

	n := c.NetworkConfig()
	nb := b.AppendNewBlock("network", nil).Body()
	dirs := make([]cty.Value, len(n.CNIBinDirs))
	for i, d := range n.CNIBinDirs {
		dirs[i] = cty.StringVal(d)
	}
	nb.SetAttributeValue("cni_bin_dirs", cty.ListVal(dirs))
	str(nb, "cni_conf_dir", n.CNIConfDir)
	str(nb, "name", n.DefaultName)
	str(nb, "bridge", n.DefaultBridge)
	str(nb, "subnet", n.Subnet)
	nb.SetAttributeValue("masquerade", cty.BoolVal(n.Masquerade))
	nb.SetAttributeValue("default_route", cty.BoolVal(n.DefaultRoute))

	cr := c.CRIConfig()
	crb := b.AppendNewBlock("cri", nil).Body()
	crb.SetAttributeValue("enabled", cty.BoolVal(cr.Enabled))
	str(crb, "address", cr.Address)
	str(crb, "path", cr.Path)
	str(crb, "namespace", cr.Namespace)
	str(crb, "sandbox_image", cr.SandboxImage)
	str(crb, "stream_address", cr.StreamAddress)
	str(crb, "stream_port", cr.StreamPort)

	for _, p := range c.Plugins {
		b.AppendNewline()
		pb := b.AppendNewBlock("plugin", []string{p.Kind, p.Name}).Body()
		str(pb, "path", p.Path)
		if p.SHA256 != "" {
			str(pb, "sha256", p.SHA256)
		}
		if len(p.Env) > 0 {
			env := map[string]cty.Value{}
			for k, v := range p.Env {
				env[k] = cty.StringVal(v)
			}
			pb.SetAttributeValue("env", cty.MapVal(env))
		}
		pb.SetAttributeValue("lazy_start", cty.BoolVal(p.LazyStart))
		dur(pb, "idle_stop", time.Duration(p.IdleStop))
		if err := writeJSONBlock(pb.AppendNewBlock("config", nil).Body(), p.Config); err != nil {
			return nil, fmt.Errorf("plugin %s: config: %w", p.Instance(), err)
		}
	}
	return f.Bytes(), nil
}

// writeJSONBlock writes a JSON object's keys as the body's attributes:
// objects as HCL object values, which blockJSON reads back as the same
// JSON.
func writeJSONBlock(body *hclwrite.Body, raw json.RawMessage) error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return err
	}
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		t, err := ctyjson.ImpliedType(obj[k])
		if err != nil {
			return err
		}
		v, err := ctyjson.Unmarshal(obj[k], t)
		if err != nil {
			return err
		}
		body.SetAttributeValue(k, v)
	}
	return nil
}

// durationString is d as the config writes it: "0" for none.
func durationString(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	return d.String()
}
