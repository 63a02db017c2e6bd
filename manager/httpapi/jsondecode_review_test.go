package httpapi

import (
	"strings"
	"testing"
)

// hostileBodies are what an attacker sends a JSON decoder: huge and odd
// numbers, deep nesting, duplicate keys, \u escapes and lone surrogates,
// NaN and Infinity as strings and bare, nulls everywhere.
var hostileBodies = []string{
	`{"version":"18446744073709551615"}`, `{"version":"18446744073709551616"}`, `{"version":1e20}`, `{"version":"1e2"}`,
	`{"version":-0}`, `{"version":"-1"}`, `{"version":1.0}`, `{"version":1.5}`, `{"version":"0x10"}`, `{"version":01}`,
	`{"version":` + strings.Repeat("9", 10000) + `}`, `{"version":"` + strings.Repeat("9", 10000) + `"}`,
	`{"version":NaN}`, `{"version":"NaN"}`, `{"version":"Infinity"}`, `{"version":"-Infinity"}`, `{"version":Infinity}`,
	`{"version":1,"version":2}`, `{"serviceId":"a","serviceId":"b"}`, `{"spec":{"name":"a"},"spec":{"labels":{"x":"y"}}}`,
	`{"spec":{"labels":{"x":"1","x":"2"}}}`, `{"service_id":"a","serviceId":"b"}`,
	`{"serviceId":"\ud800"}`, `{"serviceId":"\udc00\ud800"}`, `{"serviceId":"\ud83d\ude00"}`, `{"serviceId":"\u0000"}`,
	`{"serviceId":"\u00"}`, `{"serviceId":"\uZZZZ"}`, "{\"serviceId\":\"\xff\xfe\"}", "{\"serviceId\":\"\xed\xa0\x80\"}",
	`{"serviceId":"a\/b"}`, `{"serviceId":"\x41"}`, "{\"serviceId\":\"a\tb\"}", `{"\u0073erviceId":"a"}`,
	`{"spec":` + strings.Repeat(`{"task":`, 5000) + `{}` + strings.Repeat(`}`, 5000) + `}`,
	strings.Repeat(`[`, 100000), strings.Repeat(`{"spec":`, 100000),
	`{"spec":{"labels":` + strings.Repeat(`{"a":`, 1000) + `1` + strings.Repeat(`}`, 1000) + `}}`,
	`{"spec":null}`, `{"spec":{"labels":null}}`, `{"spec":{"labels":{"a":null}}}`, `{"spec":{"task":{"container":{"env":[null]}}}}`,
	`{"spec":{"task":{"container":{"env":null}}}}`, `{"spec":{"replicas":null}}`, `null`, `[]`, `"x"`, `1`, `true`,
	`{"spec":{"task":{"resources":{"limits":{"nanoCpus":"9223372036854775808"}}}}}`,
	`{"spec":{"task":{"resources":{"limits":{"nanoCpus":-9223372036854775808}}}}}`,
	`{"spec":{"task":{"resources":{"limits":{"nanoCpus":"-9223372036854775809"}}}}}`,
	`{"spec":{"task":{"resources":{"limits":{"nanoCpus":9.223372036854775807e18}}}}}`,
	`{"spec":{"update":{"failureAction":2147483648}}}`, `{"spec":{"update":{"failureAction":-1}}}`,
	`{"spec":{"update":{"failureAction":"1"}}}`, `{"spec":{"update":{"failureAction":1.0}}}`,
	`{"spec":{"update":{"delay":"1e400s"}}}`, `{"spec":{"update":{"delay":"-315576000001s"}}}`, `{"spec":{"update":{"delay":"NaNs"}}}`,
	`{"spec":{"update":{"delay":"1.0000000001s"}}}`, `{"spec":{"update":{"delay":1}}}`,
	`{"spec":{"name":"a"}}` + strings.Repeat(" ", 1000), `{"spec":{"name":"a"}}garbage`, `{"spec":{"name":"a"},}`, `{,}`, `{"a"}`,
	"\ufeff{}", `{"version":"1" "serviceId":"a"}`, `{"version"  "1"}`, `{"spec":{"task":{"container":{"env":["a",]}}}}`,
}

// TestUnmarshalJSONHostile: on hostile bodies unmarshalJSON does not
// panic and answers as protojson.
func TestUnmarshalJSONHostile(t *testing.T) {
	for _, in := range hostileBodies {
		checkAsProtojson(t, []byte(in))
	}
}

// FuzzUnmarshalJSONHostile is FuzzUnmarshalJSON seeded with
// hostileBodies.
func FuzzUnmarshalJSONHostile(f *testing.F) {
	for _, in := range hostileBodies {
		if len(in) <= 64<<10 {
			f.Add([]byte(in))
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 64<<10 {
			return // the mutator crawls on huge inputs; TestUnmarshalJSONHostile runs them
		}
		checkAsProtojson(t, in)
	})
}
