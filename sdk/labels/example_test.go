package labels_test

import (
	"fmt"

	"github.com/keel-runtime/keel/sdk/labels"
)

// Update changes labels along field paths, as every keel store does: a
// "labels.<key>" path sets one label, and an empty (or absent) value
// deletes it; a label on no path is left as it was (owner, in the update
// but on no path, is not set).
func ExampleUpdate() {
	current := map[string]string{"team": "ci", "tier": "base"}
	got, err := labels.Update(current, map[string]string{"tier": "app", "owner": "ops", "team": ""},
		"labels.tier", "labels.team")
	if err != nil {
		panic(err)
	}
	fmt.Println(got)

	// No field paths: replace them all.
	got, _ = labels.Update(current, map[string]string{"owner": "ops"})
	fmt.Println(got)
	// Output:
	// map[tier:app]
	// map[owner:ops]
}
