package metadata

import bolt "go.etcd.io/bbolt"

// baseVersion is the schema a new database is made with when no migration
// exists yet.
const baseVersion = 1

// migration moves a database to version from version-1. Each one needs a
// test that opens a fixture of the previous version.
type migration struct {
	version int
	name    string
	migrate func(tx *bolt.Tx) error
}

// migrations, in order of strictly increasing version. Append only.
var migrations = []migration{}

// currentVersion is the schema version this keeld writes.
func currentVersion(ms []migration) int {
	if len(ms) == 0 {
		return baseVersion
	}
	return ms[len(ms)-1].version
}
