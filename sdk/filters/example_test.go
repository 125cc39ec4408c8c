package filters_test

import (
	"fmt"

	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/filters"
)

// Parse filter strings (any of them may match; the selectors of one must
// all hold) and match objects through an Adaptor: here a map of fields,
// with labels under "labels".
func ExampleParse() {
	f, err := filters.Parse(`labels."io.keel/tier"==base,name~=^debian`, `name==scratch`)
	if err != nil {
		panic(err)
	}
	objects := []struct {
		name   string
		labels map[string]string
	}{
		{"debian-12", map[string]string{"io.keel/tier": "base"}},
		{"debian-app", map[string]string{"io.keel/tier": "app"}},
		{"scratch", nil},
	}
	for _, o := range objects {
		a := filters.AdaptorFunc(func(path []string) (string, bool) {
			switch {
			case len(path) == 1 && path[0] == "name":
				return o.name, true
			case len(path) > 1 && path[0] == "labels":
				return filters.MapField(o.labels, path[1:])
			}
			return "", false
		})
		fmt.Println(o.name, filters.Match(f, a))
	}
	// Output:
	// debian-12 true
	// debian-app false
	// scratch true
}

// A filter string that does not parse is InvalidArgument, with where.
func ExampleParse_invalid() {
	_, err := filters.Parse(`name==`)
	fmt.Println(err)
	fmt.Println(errdefs.IsInvalidArgument(err))
	// Output:
	// filter "name==": at offset 6: expected a value: invalid argument
	// true
}
