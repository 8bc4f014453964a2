package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"slices"

	"github.com/diskcache-operator/diskcache-operator/kv"
)

// MemoStore is what Memoize needs of a cache: Cache and FanoutCache both
// satisfy it.
type MemoStore interface {
	Get(ctx context.Context, key kv.Key, opts GetOptions) (Item, bool, error)
	Set(ctx context.Context, key kv.Key, value kv.Value, opts kv.SetOptions) error
}

// MemoizeOptions are python-diskcache's memoize(name, typed, expire, tag,
// ignore).
type MemoizeOptions struct {
	// Typed adds the argument types to the key, so f(1) and f(1.0) differ.
	Typed bool
	// Expire is how long results live; an expiry of zero or less means
	// results are computed but never stored, as in python-diskcache.
	Expire kv.Expiry
	// Tag is stored with every result.
	Tag kv.Key
	// Ignore lists argument positions left out of the key.
	Ignore []int
}

// Memoized is a function whose results are cached.
type Memoized[R any] struct {
	store MemoStore
	name  string
	opts  MemoizeOptions
	fn    func(ctx context.Context, args ...any) (R, error)
}

// Memoize caches fn's results in store under keys built from name and the
// call's arguments the way python-diskcache builds them: the pickled tuple
// (name, *args, None), with the argument types appended when Typed. For
// arguments of type string, []byte, bool, nil, any integer and float64 the
// key is byte for byte the one python-diskcache computes for the same call
// (provided no argument object repeats), so Go and Python callers share
// results. Results of type []byte, string, int64 and float64 are stored as
// bytes, text, int and float; any other type as JSON text.
func Memoize[R any](store MemoStore, name string, opts MemoizeOptions, fn func(ctx context.Context, args ...any) (R, error)) *Memoized[R] {
	return &Memoized[R]{store: store, name: name, opts: opts, fn: fn}
}

// Key returns the cache key of a call with args.
func (m *Memoized[R]) Key(args ...any) (kv.Key, error) {
	kept := make([]any, 0, len(args))
	for i, a := range args {
		if !slices.Contains(m.opts.Ignore, i) {
			kept = append(kept, a)
		}
	}
	return MemoKey(m.name, m.opts.Typed, kept...)
}

// Call returns the cached result for args, computing and storing it on a
// miss.
func (m *Memoized[R]) Call(ctx context.Context, args ...any) (R, error) {
	var zero R
	key, err := m.Key(args...)
	if err != nil {
		return zero, err
	}
	it, ok, err := m.store.Get(ctx, key, GetOptions{})
	if err != nil {
		return zero, err
	}
	if ok {
		if r, err := decodeResult[R](it.Value); err == nil {
			return r, nil
		}
		// A result of another shape under this key: recompute.
	}
	r, err := m.fn(ctx, args...)
	if err != nil {
		return zero, err
	}
	if m.opts.Expire.IsSet() && m.opts.Expire.Seconds() <= 0 {
		return r, nil
	}
	v, err := encodeResult(r)
	if err != nil {
		return zero, err
	}
	if err := m.store.Set(ctx, key, v, kv.SetOptions{Expire: m.opts.Expire, Tag: m.opts.Tag}); err != nil {
		return zero, err
	}
	return r, nil
}

func encodeResult(r any) (kv.Value, error) {
	switch t := r.(type) {
	case []byte:
		return kv.Bytes(t), nil
	case string:
		return kv.Text(t), nil
	case int64:
		return kv.Int(t), nil
	case float64:
		return kv.Float(t), nil
	}
	b, err := json.Marshal(r)
	if err != nil {
		return kv.Value{}, fmt.Errorf("engine: memoize: encode result: %w", err)
	}
	return kv.Value{Type: kv.ValueText, Data: b}, nil
}

func decodeResult[R any](v kv.Value) (R, error) {
	var r R
	switch p := any(&r).(type) {
	case *[]byte:
		if v.Type == kv.ValueBytes {
			*p = v.Data
			return r, nil
		}
	case *string:
		if v.Type == kv.ValueText {
			*p = string(v.Data)
			return r, nil
		}
	case *int64:
		if v.Type == kv.ValueInt {
			*p = v.Int
			return r, nil
		}
	case *float64:
		if v.Type == kv.ValueFloat {
			*p = v.Float
			return r, nil
		}
	default:
		if v.Type == kv.ValueText {
			return r, json.Unmarshal(v.Data, &r)
		}
	}
	return r, fmt.Errorf("engine: memoize: stored %s does not fit %T", v.Type, r)
}

// MemoKey builds python-diskcache's memoize key for name and args: the
// pickle (protocol 5, as pickletools.optimize leaves it) of the tuple
// (name, *args, None) or, when typed, (name, *args, None, *types).
func MemoKey(name string, typed bool, args ...any) (kv.Key, error) {
	items := make([]any, 0, 2+2*len(args))
	items = append(items, name)
	items = append(items, args...)
	items = append(items, nil)
	if typed {
		for _, a := range args {
			t, err := pyTypeName(a)
			if err != nil {
				return kv.Key{}, err
			}
			items = append(items, pyType(t))
		}
	}
	var body bytes.Buffer
	if len(items) > 3 { // TUPLE1..3 take no MARK
		body.WriteByte('(')
	}
	st := &pickleState{}
	for _, it := range items {
		if err := st.atom(&body, it); err != nil {
			return kv.Key{}, err
		}
	}
	switch len(items) {
	case 1:
		body.WriteByte(0x85)
	case 2:
		body.WriteByte(0x86)
	case 3:
		body.WriteByte(0x87)
	default:
		body.WriteByte('t')
	}
	body.WriteByte('.')
	out := []byte{0x80, 5}
	if body.Len() >= 4 { // python only frames frames of at least 4 bytes
		out = append(out, 0x95)
		out = binary.LittleEndian.AppendUint64(out, uint64(body.Len()))
	}
	return kv.PickleKey(append(out, body.Bytes()...)), nil
}

// pyType stands for a Python builtin type object in a typed key.
type pyType string

func pyTypeName(a any) (string, error) {
	switch a.(type) {
	case nil:
		return "NoneType", nil
	case bool:
		return "bool", nil
	case string:
		return "str", nil
	case []byte:
		return "bytes", nil
	case float64, float32:
		return "float", nil
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, *big.Int:
		return "int", nil
	}
	return "", fmt.Errorf("%w: memoize argument of type %T cannot be pickled", kv.ErrInvalidKey, a)
}

// pickleState remembers whether the module name "builtins" of typed keys
// is already memoized: CPython pickles it once and refers back to it.
type pickleState struct{ builtinsMemo bool }

// atom writes one tuple item in the opcodes CPython's pickler uses.
func (st *pickleState) atom(w *bytes.Buffer, a any) error {
	switch t := a.(type) {
	case nil:
		w.WriteByte('N')
	case bool:
		if t {
			w.WriteByte(0x88)
		} else {
			w.WriteByte(0x89)
		}
	case string:
		pickleString(w, 0x8c, 'X', t)
	case pyType:
		if t == "NoneType" { // type(None) pickles by reduction, not by name
			return fmt.Errorf("%w: typed memoize with a None argument is not supported", kv.ErrInvalidKey)
		}
		if st.builtinsMemo {
			w.Write([]byte{'h', 0}) // BINGET 0
		} else {
			pickleString(w, 0x8c, 'X', "builtins")
			w.WriteByte(0x94) // MEMOIZE
			st.builtinsMemo = true
		}
		pickleString(w, 0x8c, 'X', string(t))
		w.WriteByte(0x93) // STACK_GLOBAL
	case []byte:
		pickleString(w, 'C', 'B', string(t))
	case float32:
		return st.atom(w, float64(t))
	case float64:
		w.WriteByte('G')
		_ = binary.Write(w, binary.BigEndian, math.Float64bits(t))
	case int:
		pickleInt(w, big.NewInt(int64(t)))
	case int8:
		pickleInt(w, big.NewInt(int64(t)))
	case int16:
		pickleInt(w, big.NewInt(int64(t)))
	case int32:
		pickleInt(w, big.NewInt(int64(t)))
	case int64:
		pickleInt(w, big.NewInt(t))
	case uint:
		pickleInt(w, new(big.Int).SetUint64(uint64(t)))
	case uint8:
		pickleInt(w, big.NewInt(int64(t)))
	case uint16:
		pickleInt(w, big.NewInt(int64(t)))
	case uint32:
		pickleInt(w, big.NewInt(int64(t)))
	case uint64:
		pickleInt(w, new(big.Int).SetUint64(t))
	case *big.Int:
		pickleInt(w, t)
	default:
		return fmt.Errorf("%w: memoize argument of type %T cannot be pickled", kv.ErrInvalidKey, a)
	}
	return nil
}

func pickleString(w *bytes.Buffer, short, long byte, s string) {
	if len(s) < 256 {
		w.WriteByte(short)
		w.WriteByte(byte(len(s)))
	} else {
		w.WriteByte(long)
		_ = binary.Write(w, binary.LittleEndian, uint32(len(s)))
	}
	w.WriteString(s)
}

func pickleInt(w *bytes.Buffer, n *big.Int) {
	switch {
	case n.Sign() >= 0 && n.Cmp(big.NewInt(0xff)) <= 0:
		w.WriteByte('K')
		w.WriteByte(byte(n.Int64()))
	case n.Sign() >= 0 && n.Cmp(big.NewInt(0xffff)) <= 0:
		w.WriteByte('M')
		_ = binary.Write(w, binary.LittleEndian, uint16(n.Int64()))
	case n.IsInt64() && n.Int64() >= math.MinInt32 && n.Int64() <= math.MaxInt32:
		w.WriteByte('J')
		_ = binary.Write(w, binary.LittleEndian, int32(n.Int64()))
	default:
		b := twosComplementLE(n)
		w.WriteByte(0x8a) // LONG1
		w.WriteByte(byte(len(b)))
		w.Write(b)
	}
}

// twosComplementLE encodes n in the fewest little-endian two's-complement
// bytes, as pickle's encode_long does.
func twosComplementLE(n *big.Int) []byte {
	nbytes := (n.BitLen() >> 3) + 1
	v := new(big.Int).Set(n)
	if n.Sign() < 0 {
		v.Add(v, new(big.Int).Lsh(big.NewInt(1), uint(nbytes*8)))
	}
	be := v.FillBytes(make([]byte, nbytes))
	// Drop a redundant sign byte the way CPython does.
	if n.Sign() < 0 && nbytes > 1 && be[0] == 0xff && be[1]&0x80 != 0 {
		be = be[1:]
	}
	slices.Reverse(be)
	return be
}
