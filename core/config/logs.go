package config

import (
	"github.com/docker/go-units"
	"github.com/hashicorp/hcl/v2"
)

// Defaults of the container_logs block.
const (
	DefaultContainerLogMaxSize  = 10 << 20
	DefaultContainerLogMaxFiles = 3
)

// ContainerLogs are the defaults of the logs keeld keeps of containers'
// output (the `container_logs {}` block): a task's log file is rotated
// once it would pass MaxSize bytes, keeping MaxFiles files, the current
// one included. A task's create may ask for others.
type ContainerLogs struct {
	MaxSize  int64 `json:"max_size"`
	MaxFiles int   `json:"max_files"`
}

type containerLogsSchema struct {
	MaxSize       *string   `hcl:"max_size,optional"`
	MaxSizeRange  hcl.Range `hcl:"max_size,attr_value_range"`
	MaxFiles      *int      `hcl:"max_files,optional"`
	MaxFilesRange hcl.Range `hcl:"max_files,attr_value_range"`
}

func decodeContainerLogs(l *containerLogsSchema, fail failFunc) ContainerLogs {
	out := ContainerLogs{MaxSize: DefaultContainerLogMaxSize, MaxFiles: DefaultContainerLogMaxFiles}
	if l == nil {
		return out
	}
	if l.MaxSize != nil {
		n, err := units.RAMInBytes(*l.MaxSize)
		switch {
		case err != nil:
			fail(l.MaxSizeRange, "Invalid container_logs max_size", "max_size %q is not a size such as 1048576, \"10MiB\" or \"1GiB\": %v.", *l.MaxSize, err)
		case n < 1:
			fail(l.MaxSizeRange, "Invalid container_logs max_size", "max_size must be at least 1 byte, not %q.", *l.MaxSize)
		default:
			out.MaxSize = n
		}
	}
	if l.MaxFiles != nil {
		if *l.MaxFiles < 1 {
			fail(l.MaxFilesRange, "Invalid container_logs max_files", "max_files must be at least 1, not %d.", *l.MaxFiles)
		} else {
			out.MaxFiles = *l.MaxFiles
		}
	}
	return out
}
