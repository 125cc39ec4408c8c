package config

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	ctyjson "github.com/zclconf/go-cty/cty/json"
)

// blockJSON turns a free-form config block into a JSON object, following
// the mapping in the package doc. It returns nil with diagnostics when the
// block cannot be mapped. keys is where each key is written, by its dotted
// path in the JSON ("tls.verify"; an array's items share their path).
func blockJSON(body hcl.Body) (raw json.RawMessage, keys map[string]hcl.Range, diags hcl.Diagnostics) {
	sb, ok := body.(*hclsyntax.Body)
	if !ok {
		// Parse only produces native syntax; a JSON-syntax body would need
		// a schema to tell blocks from attributes.
		return nil, nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Unsupported config block",
			Detail:   "a config block must be written in HCL native syntax.",
			Subject:  body.MissingItemRange().Ptr(),
		}}
	}
	keys = map[string]hcl.Range{}
	obj, diags := bodyObject(sb, "", keys)
	if diags.HasErrors() {
		return nil, nil, diags
	}
	raw, err := json.Marshal(obj)
	if err != nil {
		// Every leaf is JSON cty produced; this is a bug.
		panic(fmt.Sprintf("config: marshal config block: %v", err))
	}
	return raw, keys, diags
}

// object is a JSON object being built; its values are json.RawMessage,
// object or []any.
type object map[string]any

// bodyObject maps body, whose keys are under prefix ("" or "a.b."),
// recording where each key is in keys.
func bodyObject(body *hclsyntax.Body, prefix string, keys map[string]hcl.Range) (object, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	obj := object{}
	// Where each key of obj was defined, to name both sides of a clash.
	defined := map[string]hcl.Range{}

	attrs := make([]*hclsyntax.Attribute, 0, len(body.Attributes))
	for _, a := range body.Attributes {
		attrs = append(attrs, a)
	}
	sort.Slice(attrs, func(i, j int) bool { return attrs[i].SrcRange.Start.Byte < attrs[j].SrcRange.Start.Byte })
	for _, a := range attrs {
		v, more := a.Expr.Value(nil)
		diags = append(diags, more...)
		if more.HasErrors() {
			continue
		}
		raw, err := ctyjson.Marshal(v, v.Type())
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Invalid config value",
				Detail:   fmt.Sprintf("%s cannot be written as JSON: %v.", a.Name, err),
				Subject:  a.Expr.Range().Ptr(),
			})
			continue
		}
		obj[a.Name] = json.RawMessage(raw)
		defined[a.Name] = a.NameRange
		keys[prefix+a.Name] = a.NameRange
	}

	// Blocks of one type, in file order.
	var types []string
	byType := map[string][]*hclsyntax.Block{}
	for _, b := range body.Blocks {
		if byType[b.Type] == nil {
			types = append(types, b.Type)
		}
		byType[b.Type] = append(byType[b.Type], b)
	}
	for _, typ := range types {
		blocks := byType[typ]
		first := blocks[0]
		if prev, ok := defined[typ]; ok {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Duplicate config key",
				Detail:   fmt.Sprintf("block %q has the name of the attribute at %s.", typ, formatPos(prev)),
				Subject:  first.TypeRange.Ptr(),
			})
			continue
		}
		keys[prefix+typ] = first.TypeRange
		v, more := blocksValue(typ, blocks, prefix+typ+".", keys)
		diags = append(diags, more...)
		if !more.HasErrors() {
			obj[typ] = v
		}
	}
	return obj, diags
}

// blocksValue maps every block of one type: labels nest as keys, a single
// unlabelled block is an object, repeated unlabelled blocks an array.
func blocksValue(typ string, blocks []*hclsyntax.Block, prefix string, keys map[string]hcl.Range) (any, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	first := blocks[0]
	n := len(first.Labels)
	for _, b := range blocks[1:] {
		if len(b.Labels) != n {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Inconsistent block labels",
				Detail:   fmt.Sprintf("this %q block has %d labels, the one at %s has %d: all %q blocks need the same number.", typ, len(b.Labels), formatPos(first.TypeRange), n, typ),
				Subject:  b.TypeRange.Ptr(),
			})
		}
	}
	if diags.HasErrors() {
		return nil, diags
	}

	if n == 0 {
		var items []any
		for _, b := range blocks {
			// Items of an array share their keys' paths: the first is kept.
			itemKeys := map[string]hcl.Range{}
			o, more := bodyObject(b.Body, prefix, itemKeys)
			diags = append(diags, more...)
			items = append(items, o)
			for k, r := range itemKeys {
				if _, ok := keys[k]; !ok {
					keys[k] = r
				}
			}
		}
		if len(items) == 1 {
			return items[0], diags
		}
		return items, diags
	}

	root := object{}
	defined := map[string]hcl.Range{} // full label path → block
	for _, b := range blocks {
		for i := range b.Labels {
			if _, ok := keys[prefix+strings.Join(b.Labels[:i+1], ".")]; !ok {
				keys[prefix+strings.Join(b.Labels[:i+1], ".")] = b.LabelRanges[i]
			}
		}
		o, more := bodyObject(b.Body, prefix+strings.Join(b.Labels, ".")+".", keys)
		diags = append(diags, more...)
		path := fmt.Sprintf("%q", b.Labels)
		if prev, ok := defined[path]; ok {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Duplicate config block",
				Detail:   fmt.Sprintf("%s %s is already defined at %s.", typ, quoteAll(b.Labels), formatPos(prev)),
				Subject:  hcl.RangeBetween(b.LabelRanges[0], b.LabelRanges[n-1]).Ptr(),
			})
			continue
		}
		defined[path] = b.TypeRange
		node := root
		for _, l := range b.Labels[:n-1] {
			next, ok := node[l].(object)
			if !ok {
				next = object{}
				node[l] = next
			}
			node = next
		}
		node[b.Labels[n-1]] = o
	}
	return root, diags
}

func quoteAll(ss []string) string {
	out := ""
	for i, s := range ss {
		if i > 0 {
			out += " "
		}
		out += fmt.Sprintf("%q", s)
	}
	return out
}
