package server

import (
	"testing"

	keelv1 "github.com/keel-runtime/keel/api/keel/v1"
)

func TestAPIWork(t *testing.T) {
	for method, want := range map[string]bool{
		keelv1.Transfer_Pull_FullMethodName:                         true,
		keelv1.Tasks_Create_FullMethodName:                          true,
		keelv1.Tasks_Events_FullMethodName:                          false,
		keelv1.Tasks_Wait_FullMethodName:                            false,
		"/grpc.health.v1.Health/Watch":                              false,
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": false,
	} {
		if got := apiWork(method); got != want {
			t.Errorf("apiWork(%s) = %v, want %v", method, got, want)
		}
	}
}
