#!/bin/sh
# Vendor the browser assets the app serves itself (no page may load anything from another host): pinned
# versions from the npm registry, each with its licence, into newsletter/web/static/vendor/. Run it only to
# change a version; its output is committed, so installs and runs never download anything.
set -eu
cd "$(dirname "$0")/.."
DEST=newsletter/web/static/vendor
HTMX=2.0.11
SWAGGER_UI=5.35.0
REDOC=2.5.4
CHARTJS=4.6.1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fetch() {  # package version sha512 -> $work/package-name/, refusing a tarball whose digest is not the pinned one
    (cd "$work" && npm pack --silent "$1@$2" >/dev/null)
    got="sha512-$(openssl dgst -sha512 -binary "$work/$1-$2.tgz" | base64 -w0)"
    if [ "$got" != "$3" ]; then echo "$1@$2: checksum $got, expected $3" >&2; exit 1; fi
    mkdir -p "$work/$1" && tar xzf "$work/$1-$2.tgz" -C "$work/$1" --strip-components 1
}
fetch htmx.org "$HTMX" sha512-Thx/WtpeOQqSrqBCw/A1cwGJGg4UrVa3+sW0GmrM3p4gJgO89ecH4qtbnyzDDWFvBTqjnIMCgELTNt636dtamA==
fetch swagger-ui-dist "$SWAGGER_UI" sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ==
fetch redoc "$REDOC" sha512-M6jWhG1qoBnH6TFmzJnstyCZ87HmOY/UzDm78mHiYihEdlV/YcS9ogOo1NlElnJMeLsyxHFe2yFc4sNjHTrABQ==
fetch chart.js "$CHARTJS" sha512-hJyniucsFmq//EvXYvJ6c6mahPoI3kaxdjVH8awTaJ/fDNWeSqqqArixMJWkWNN6fcYvPU3HneSANFNYtRi61g==
rm -rf "$DEST"
mkdir -p "$DEST/htmx" "$DEST/swagger-ui" "$DEST/redoc" "$DEST/chartjs"
cp "$work/htmx.org/dist/htmx.min.js" "$work/htmx.org/LICENSE" "$DEST/htmx/"
cp "$work/swagger-ui-dist/swagger-ui-bundle.js" "$work/swagger-ui-dist/swagger-ui.css" \
   "$work/swagger-ui-dist/favicon-32x32.png" "$work/swagger-ui-dist/LICENSE" "$work/swagger-ui-dist/NOTICE" \
   "$DEST/swagger-ui/"
cp "$work/redoc/bundles/redoc.standalone.js" "$work/redoc/LICENSE" "$DEST/redoc/"
cp "$work/chart.js/dist/chart.umd.min.js" "$work/chart.js/LICENSE.md" "$DEST/chartjs/"
cat > "$DEST/VERSIONS" <<VERSIONS
htmx.org $HTMX (0BSD)
swagger-ui-dist $SWAGGER_UI (Apache-2.0)
redoc $REDOC (MIT)
chart.js $CHARTJS (MIT)
VERSIONS
# Source maps point at files we do not ship; browsers would request them.
sed -i '/^\/\/# sourceMappingURL=/d' "$DEST"/*/*.js
# Redoc's "powered by" logo is an <img> from its CDN: render nothing instead, and fail if the pinned
# bundle's code ever stops matching.
logo='e?n.createElement("img",{alt:"redocly logo",onError:()=>t(!1),src:"https://cdn.redoc.ly/redoc/logo-mini.svg"}):null'
grep -qF "$logo" "$DEST/redoc/redoc.standalone.js" || { echo "redoc: the CDN logo code moved" >&2; exit 1; }
sed -i "s#$(printf '%s' "$logo" | sed 's/[.[\*^$/#]/\\&/g')#null#" "$DEST/redoc/redoc.standalone.js"
! grep -q "cdn.redoc.ly" "$DEST/redoc/redoc.standalone.js"
echo "vendored into $DEST:" && cat "$DEST/VERSIONS"
