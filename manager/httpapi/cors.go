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

// CrossOriginWrites refuses a write (any method but GET, HEAD and
// OPTIONS) that a browser sent from another origin without an
// Authorization header. A page can make a browser POST anywhere without a
// preflight (a form, text/plain), and the browser then presents the
// client certificate it holds for this server: without this check a
// hostile page would act with an admin's certificate, whatever CORS says
// (CORS only hides the reply). A token travels in a header a page can set
// cross-origin only after a preflight, which CORS decides. Programs send
// no Origin; the dashboard's own requests carry this server's origin.
func CrossOriginWrites(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			next.ServeHTTP(w, r)
			return
		}
		origin := r.Header.Get("Origin")
		if origin == "" || origin == "https://"+r.Host || r.Header.Get("Authorization") != "" {
			next.ServeHTTP(w, r)
			return
		}
		http.Error(w, "a write from origin "+strconv.Quote(origin)+" must carry an API token (Authorization header); a client certificate alone is not accepted cross-origin", http.StatusForbidden)
	})
}
