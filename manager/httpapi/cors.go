package httpapi

import (
	"net/http"
	"slices"
	"strconv"
)

// CORS allows cross-origin requests from origins ("*": any) and answers
// their preflights: the API's methods, the Authorization and Content-Type
// headers, no credentials (a token goes in the Authorization header, not a
// cookie). With no origins it passes requests on untouched, so browsers
// refuse cross-origin calls; a preflight from an origin not allowed gets
// 403 without CORS headers.
func CORS(origins []string, next http.Handler) http.Handler {
	if len(origins) == 0 {
		return next
	}
	anyOrigin := slices.Contains(origins, "*")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Add("Vary", "Origin")
		allowed := anyOrigin || slices.Contains(origins, origin)
		preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
		if !allowed {
			if preflight {
				http.Error(w, "origin "+strconv.Quote(origin)+" is not allowed (--http-cors-origin)", http.StatusForbidden)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Access-Control-Allow-Origin", origin)
		if preflight {
			w.Header().Set("Access-Control-Allow-Methods", "GET, POST, PATCH, DELETE")
			w.Header().Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Accept")
			w.Header().Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}
