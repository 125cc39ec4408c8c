package images

// WithDefaults is l with keel's default in each field left zero: the
// limits a pull, unpack or import applies.
func (l Limits) WithDefaults() Limits { return l.withDefaults() }
