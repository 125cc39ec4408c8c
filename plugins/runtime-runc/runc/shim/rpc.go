package shim

import (
	"bufio"
	"encoding/gob"
	"errors"
	"io"
	"net"
	"reflect"
	"sync"
)

// The shim serves net/rpc's protocol (gob, as rpc.NewClient speaks it) with
// the few lines below rather than with package net/rpc, whose HTTP
// transport and debug pages bring net/http and html/template into every
// shim: 0.4 MB more resident each. The plugin's end is net/rpc's Client,
// as it always was, so plugins and shims of either kind talk.

// rpcRequest and rpcResponse are net/rpc's Request and Response headers
// (gob matches them by field name).
type rpcRequest struct {
	ServiceMethod string
	Seq           uint64
}

type rpcResponse struct {
	ServiceMethod string
	Seq           uint64
	Error         string
}

// method reads a call's argument; the call it returns runs it.
type method func(dec *gob.Decoder) (call func() (reply any, err error), err error)

// handle makes a method of f, a net/rpc-style method (argument, reply
// pointer, error).
func handle[Req, Reply any](f func(Req, *Reply) error) method {
	return func(dec *gob.Decoder) (func() (any, error), error) {
		var req Req
		if err := dec.Decode(&req); err != nil {
			return nil, err
		}
		return func() (any, error) {
			reply := new(Reply)
			return reply, f(req, reply)
		}, nil
	}
}

// methods are the shim's RPC methods, by net/rpc name.
func (s *Service) methods() map[string]method {
	return map[string]method{
		ServiceName + ".Start":      handle(s.Start),
		ServiceName + ".Exec":       handle(s.Exec),
		ServiceName + ".Kill":       handle(s.Kill),
		ServiceName + ".Delete":     handle(s.Delete),
		ServiceName + ".ResizePty":  handle(s.ResizePty),
		ServiceName + ".CloseIO":    handle(s.CloseIO),
		ServiceName + ".Pause":      handle(s.Pause),
		ServiceName + ".Resume":     handle(s.Resume),
		ServiceName + ".Pids":       handle(s.Pids),
		ServiceName + ".Checkpoint": handle(s.Checkpoint),
		ServiceName + ".Update":     handle(s.Update),
		ServiceName + ".Wait":       handle(s.Wait),
		ServiceName + ".State":      handle(s.State),
		ServiceName + ".Events":     handle(s.Events),
		ServiceName + ".Shutdown":   handle(s.Shutdown),
		ServiceName + ".ReopenLog":  handle(s.ReopenLog),
	}
}

// serveConn serves one connection as net/rpc's ServeConn does: each call
// in a goroutine of its own, replies written one at a time; it returns
// once its reads end and every call it read has been answered, and
// closes conn.
func serveConn(conn io.ReadWriteCloser, methods map[string]method) {
	w := bufio.NewWriter(conn)
	enc, dec := gob.NewEncoder(w), gob.NewDecoder(bufio.NewReader(conn))
	var sending sync.Mutex
	send := func(req rpcRequest, reply any, err error) {
		resp := rpcResponse{ServiceMethod: req.ServiceMethod, Seq: req.Seq}
		if err != nil {
			resp.Error, reply = err.Error(), Empty{}
		}
		sending.Lock()
		defer sending.Unlock()
		if enc.Encode(&resp) != nil || enc.Encode(reply) != nil || w.Flush() != nil {
			conn.Close()
		}
	}
	var calls sync.WaitGroup
	for {
		var req rpcRequest
		if err := dec.Decode(&req); err != nil {
			break
		}
		m, ok := methods[req.ServiceMethod]
		if !ok {
			// Its argument, discarded.
			if dec.DecodeValue(reflect.Value{}) != nil {
				break
			}
			send(req, nil, errors.New("rpc: can't find method "+req.ServiceMethod))
			continue
		}
		call, err := m(dec)
		if err != nil {
			send(req, nil, errors.New("rpc: "+err.Error()))
			continue
		}
		calls.Go(func() {
			reply, err := call()
			send(req, reply, err)
		})
	}
	calls.Wait()
	conn.Close()
}

// rpcServer serves the plugin's connections until the shim ends, then
// drains them: every call it read has its reply written before the shim
// exits, Shutdown's among them.
type rpcServer struct {
	lis       *net.UnixListener
	accepting chan struct{} // closed once the accept loop has returned
	served    sync.WaitGroup
	mu        sync.Mutex
	conns     map[*net.UnixConn]struct{}
}

func serve(lis *net.UnixListener, methods map[string]method) *rpcServer {
	// Shutdown removes the socket; closing must not remove a later one.
	lis.SetUnlinkOnClose(false)
	r := &rpcServer{lis: lis, accepting: make(chan struct{}), conns: map[*net.UnixConn]struct{}{}}
	go func() {
		defer close(r.accepting)
		for {
			conn, err := lis.AcceptUnix()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.conns[conn] = struct{}{}
			r.mu.Unlock()
			r.served.Go(func() {
				serveConn(conn, methods)
				r.mu.Lock()
				delete(r.conns, conn)
				r.mu.Unlock()
			})
		}
	}()
	return r
}

// drain stops accepting, ends the reads of every connection and returns
// once each has written the replies to the calls it had read.
func (r *rpcServer) drain() {
	r.lis.Close()
	<-r.accepting
	r.mu.Lock()
	for conn := range r.conns {
		conn.CloseRead()
	}
	r.mu.Unlock()
	r.served.Wait()
}
