"""Draw the starter gallery's illustrations: small SVG scenes rendered to PNG/JPEG by Chromium.

Run from the checkout: `.venv/bin/python scripts/gallery_assets.py`. The files land in
nudge/static/img/gallery/assets/ and are committed; run again only to change the artwork.
"""
from __future__ import annotations

import sys
from pathlib import Path

from gallery_thumbnails import launch_chromium

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "nudge" / "static" / "img" / "gallery" / "assets"
MAX_BYTES = 60_000

# One palette shared by every scene so the gallery reads as one brand.
CREAM = "#f6f1e7"
SAND = "#ead9bd"
WOOD = "#c79a6b"
WOOD_DARK = "#a87b4f"
TERRACOTTA = "#d4835a"
CLAY = "#e8b08f"
SAGE = "#9dbb9a"
GREEN = "#2f6f4e"
DEEP = "#1f3b2d"
BERRY = "#4f5d95"
SUN = "#f2c48d"
WHITE = "#ffffff"


def sprig(x: float, y: float, scale: float = 1.0, angle: float = 0.0, color: str = GREEN,
          berries: bool = True) -> str:
    """A juniper sprig: a curved stem with needle clusters and a few blue berries."""
    needles = []
    for i in range(7):
        t = i / 6
        sx, sy = 0 + 6 * t, -18 - 120 * t
        length = 34 - 16 * t
        for side in (-1, 1):
            ex, ey = sx + side * length, sy - length * 0.55
            needles.append(f'<path d="M{sx:.1f},{sy:.1f} Q{(sx + ex) / 2:.1f},{sy - 4:.1f} '
                           f'{ex:.1f},{ey:.1f}" stroke="{color}" stroke-width="5" fill="none" '
                           f'stroke-linecap="round"/>')
    dots = ""
    if berries:
        dots = "".join(f'<circle cx="{cx}" cy="{cy}" r="{r}" fill="{BERRY}"/>'
                       for cx, cy, r in ((-14, -52, 7), (16, -78, 6.5), (-6, -104, 6)))
    stem = (f'<path d="M0,0 Q-4,-70 6,-140" stroke="{color}" stroke-width="6" fill="none" '
            f'stroke-linecap="round"/>')
    return (f'<g transform="translate({x},{y}) rotate({angle}) scale({scale})">'
            f'{stem}{"".join(needles)}{dots}</g>')


def vase(x: float, y: float, w: float, h: float, color: str, band: str | None = None) -> str:
    """A tall vase standing on (x, y), centred on x."""
    half = w / 2
    neck = w * 0.22
    path = (f"M{x - neck},{y - h} L{x + neck},{y - h} Q{x + neck},{y - h * 0.78} {x + half},{y - h * 0.55} "
            f"Q{x + half * 1.05},{y - h * 0.1} {x + half * 0.7},{y} L{x - half * 0.7},{y} "
            f"Q{x - half * 1.05},{y - h * 0.1} {x - half},{y - h * 0.55} Q{x - neck},{y - h * 0.78} "
            f"{x - neck},{y - h} Z")
    out = f'<path d="{path}" fill="{color}"/>'
    if band:
        out += f'<rect x="{x - half}" y="{y - h * 0.42}" width="{w}" height="{h * 0.07}" fill="{band}" opacity="0.8"/>'
        out = f'<g>{out}</g>'
    return out


def pot(x: float, y: float, w: float, h: float, color: str, rim: str) -> str:
    """A tapered plant pot standing on (x, y), centred on x."""
    top, bottom = w / 2, w * 0.36
    return (f'<path d="M{x - top},{y - h} L{x + top},{y - h} L{x + bottom},{y} L{x - bottom},{y} Z" '
            f'fill="{color}"/><rect x="{x - top - 6}" y="{y - h - 4}" width="{w + 12}" height="{h * 0.2}" '
            f'rx="4" fill="{rim}"/>')


def bowl_stack(x: float, y: float, colors: tuple[str, ...]) -> str:
    """Nested bowls, widest at the bottom."""
    out = []
    for i, color in enumerate(colors):
        w = 150 - i * 26
        by = y - i * 30
        out.append(f'<path d="M{x - w / 2},{by - 30} L{x + w / 2},{by - 30} Q{x + w / 2},{by} {x + w * 0.2},{by} '
                   f'L{x - w * 0.2},{by} Q{x - w / 2},{by} {x - w / 2},{by - 30} Z" fill="{color}"/>')
    return "".join(out)


def mug(x: float, y: float, color: str, steam: bool = False) -> str:
    """A mug with a handle standing on (x, y); x is its left edge."""
    out = (f'<rect x="{x}" y="{y - 110}" width="96" height="110" rx="14" fill="{color}"/>'
           f'<path d="M{x + 96},{y - 88} q36,0 36,32 q0,32 -36,32" stroke="{color}" stroke-width="14" fill="none"/>')
    if steam:
        out += "".join(f'<path d="M{x + dx},{y - 130} q-14,-20 0,-40 q14,-20 0,-40" stroke="{WHITE}" '
                       f'stroke-width="7" fill="none" stroke-linecap="round" opacity="0.8"/>'
                       for dx in (30, 64))
    return out


def candle(x: float, y: float, color: str, glow: str = SUN) -> str:
    """A jar candle with a flame standing on (x, y); x is its centre."""
    return (f'<rect x="{x - 70}" y="{y - 150}" width="140" height="150" rx="18" fill="{color}"/>'
            f'<rect x="{x - 70}" y="{y - 104}" width="140" height="56" fill="{WHITE}" opacity="0.55"/>'
            f'<circle cx="{x}" cy="{y - 196}" r="40" fill="{glow}" opacity="0.35"/>'
            f'<path d="M{x},{y - 222} q20,26 0,50 q-20,-24 0,-50 Z" fill="#f0a24a"/>'
            f'<rect x="{x - 2}" y="{y - 172}" width="4" height="22" fill="{DEEP}"/>')


def svg(width: int, height: int, body: str, background: str | None) -> str:
    """Wrap a scene in an SVG document of the given size."""
    bg = f'<rect width="{width}" height="{height}" fill="{background}"/>' if background else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">{bg}{body}</svg>')


def newsletter_hero() -> str:
    """The newsletter's banner: a workshop shelf under an arched window with juniper."""
    body = (
        f'<path d="M640,600 V250 A230,230 0 0 1 1100,250 V600 Z" fill="#dde8d8"/>'
        f'<circle cx="930" cy="250" r="74" fill="{SUN}"/>'
        f'<path d="M640,430 Q760,340 880,400 T1100,370 V600 H640 Z" fill="{SAGE}"/>'
        f'<path d="M640,470 Q800,410 940,460 T1100,450 V600 H640 Z" fill="#7fa37f"/>'
        f'<rect x="0" y="470" width="1200" height="26" fill="{WOOD}"/>'
        f'<rect x="0" y="496" width="1200" height="104" fill="{SAND}"/>'
        + vase(720, 470, 120, 230, TERRACOTTA, band=CREAM)
        + sprig(705, 250, 1.1, -12) + sprig(735, 250, 1.0, 14)
        + pot(880, 470, 130, 110, CREAM, WHITE)
        + sprig(880, 364, 0.9, -25, berries=False) + sprig(880, 364, 1.05, 5) + sprig(880, 364, 0.85, 32, berries=False)
        + bowl_stack(1040, 470, (GREEN, CLAY, CREAM))
        + sprig(150, 470, 2.2, 12) + sprig(250, 470, 1.5, 36, berries=False)
        + f'<circle cx="420" cy="150" r="10" fill="{BERRY}" opacity="0.5"/>'
        + f'<circle cx="470" cy="200" r="6" fill="{BERRY}" opacity="0.4"/>'
        + mug(440, 470, GREEN, steam=True)
    )
    return svg(1200, 600, body, CREAM)


def workshop_mugs() -> str:
    """Two mugs and a jug on a table: the newsletter's workshop article."""
    body = (
        f'<circle cx="560" cy="250" r="190" fill="#dde8d8"/>'
        f'<rect x="0" y="400" width="800" height="100" fill="{SAND}"/>'
        f'<rect x="0" y="392" width="800" height="16" fill="{WOOD}"/>'
        + mug(130, 400, TERRACOTTA, steam=True) + mug(300, 400, SAGE)
        + vase(570, 400, 150, 210, GREEN, band=SAGE)
        + sprig(560, 194, 0.9, -10) + sprig(582, 194, 0.8, 18, berries=False)
    )
    return svg(800, 500, body, CREAM)


def market_stall() -> str:
    """A striped market awning over a table of pots: the newsletter's events article."""
    stripes = "".join(f'<path d="M{x},80 h100 v90 q-50,40 -100,0 Z" fill="{GREEN if i % 2 == 0 else CREAM}"/>'
                      for i, x in enumerate(range(100, 700, 100)))
    body = (
        f'<rect x="110" y="60" width="580" height="26" rx="6" fill="{DEEP}"/>'
        f'{stripes}'
        f'<rect x="120" y="170" width="12" height="210" fill="{WOOD_DARK}"/>'
        f'<rect x="668" y="170" width="12" height="210" fill="{WOOD_DARK}"/>'
        f'<rect x="90" y="360" width="620" height="30" rx="6" fill="{WOOD}"/>'
        f'<rect x="0" y="390" width="800" height="110" fill="{SAND}"/>'
        + pot(220, 360, 100, 80, TERRACOTTA, CLAY) + sprig(220, 286, 0.8, -8)
        + vase(360, 360, 90, 150, CLAY, band=CREAM)
        + bowl_stack(500, 360, (SAGE, CLAY))
        + candle(620, 360, GREEN)
    )
    return svg(800, 500, body, "#e9f0e5")


def product_vase() -> str:
    """Product tile: a speckled stoneware vase."""
    dots = "".join(f'<circle cx="{x}" cy="{y}" r="3" fill="{WOOD_DARK}" opacity="0.5"/>'
                   for x, y in ((270, 330), (330, 300), (300, 390), (250, 430), (350, 370), (310, 470), (280, 250)))
    body = ('<circle cx="300" cy="300" r="210" fill="#cfe0ca"/>'
            + vase(300, 520, 220, 300, WHITE) + dots + sprig(290, 220, 1.0, -8) + sprig(310, 220, 0.9, 20)
            + f'<rect x="0" y="520" width="600" height="80" fill="{SAND}"/>')
    return svg(600, 600, body, CREAM)


def product_candle() -> str:
    """Product tile: a juniper-scented candle."""
    body = ('<circle cx="300" cy="300" r="210" fill="#e3ecdf"/>'
            + candle(300, 520, GREEN) + sprig(140, 520, 1.0, -20) + sprig(460, 520, 1.0, 24, berries=False)
            + f'<rect x="0" y="520" width="600" height="80" fill="{SAND}"/>')
    return svg(600, 600, body, CREAM)


def product_planter() -> str:
    """Product tile: a terracotta planter with a juniper bonsai."""
    body = ('<circle cx="300" cy="300" r="210" fill="#e3ecdf"/>'
            + sprig(300, 400, 1.5, -30) + sprig(300, 400, 1.7, 4) + sprig(300, 400, 1.4, 36, berries=False)
            + pot(300, 520, 260, 150, TERRACOTTA, CLAY)
            + f'<rect x="0" y="520" width="600" height="80" fill="{SAND}"/>')
    return svg(600, 600, body, CREAM)


def studio_front() -> str:
    """The announcement's banner: a new shop front with an awning, in indigo."""
    indigo, pale, lilac = "#4338ca", "#e6e4fb", "#a5a0ee"
    stripes = "".join(f'<path d="M{x},190 h80 v70 q-40,34 -80,0 Z" fill="{indigo if i % 2 == 0 else lilac}"/>'
                      for i, x in enumerate(range(360, 840, 80)))
    body = (
        f'<circle cx="1040" cy="130" r="70" fill="{SUN}"/>'
        f'<rect x="320" y="90" width="560" height="430" fill="{WHITE}"/>'
        f'<rect x="340" y="110" width="520" height="60" rx="6" fill="{indigo}"/>'
        f'<rect x="470" y="130" width="260" height="20" rx="10" fill="{pale}"/>'
        f'{stripes}'
        f'<rect x="380" y="300" width="220" height="180" rx="6" fill="{pale}"/>'
        f'<rect x="660" y="300" width="160" height="220" rx="6" fill="{indigo}"/>'
        f'<circle cx="800" cy="412" r="7" fill="{SUN}"/>'
        + vase(450, 480, 60, 100, TERRACOTTA) + pot(530, 480, 70, 60, CREAM, WHITE)
        + sprig(530, 420, 0.6, -10) + sprig(450, 382, 0.5, 10, berries=False)
        + '<rect x="0" y="520" width="1200" height="80" fill="#c9c4f2"/>'
        + f'<rect x="0" y="516" width="1200" height="10" fill="{indigo}" opacity="0.35"/>'
        + pot(260, 520, 110, 90, TERRACOTTA, CLAY) + sprig(260, 432, 1.2, -14) + sprig(260, 432, 1.0, 18, berries=False)
        + pot(940, 520, 110, 90, TERRACOTTA, CLAY) + sprig(940, 432, 1.2, 12) + sprig(940, 432, 1.0, -20, berries=False)
        + "".join(f'<path d="M{x},{y} l10,-24 l10,24 l-10,8 Z" fill="{indigo}" opacity="0.35"/>'
                  for x, y in ((120, 140), (180, 260), (1100, 320), (1130, 220)))
    )
    return svg(1200, 600, body, pale)


def promotion_hero() -> str:
    """The promotion's banner: a gift box, price tags and confetti on coral."""
    coral, blush, deep = "#e4572e", "#fde3d8", "#9a2f12"
    confetti = "".join(
        f'<rect x="{x}" y="{y}" width="18" height="8" rx="3" fill="{c}" transform="rotate({r} {x} {y})"/>'
        for x, y, r, c in ((140, 120, 20, WHITE), (260, 420, -30, SUN), (980, 110, 40, WHITE),
                           (1080, 400, -15, SUN), (420, 90, 60, SUN), (820, 480, 10, WHITE),
                           (1000, 260, -50, blush), (180, 300, 35, blush)))
    tag = (f'<g transform="rotate(-14 330 300)"><path d="M250,220 h150 l50,80 l-50,80 h-150 Z" fill="{blush}"/>'
           f'<circle cx="410" cy="300" r="12" fill="{coral}"/>'
           f'<rect x="275" y="270" width="90" height="16" rx="8" fill="{coral}"/>'
           f'<rect x="275" y="300" width="60" height="14" rx="7" fill="{coral}" opacity="0.6"/></g>')
    box = (f'<rect x="560" y="250" width="300" height="250" rx="10" fill="{WHITE}"/>'
           f'<rect x="540" y="200" width="340" height="80" rx="10" fill="{blush}"/>'
           f'<rect x="690" y="200" width="40" height="300" fill="{deep}"/>'
           f'<path d="M710,200 C640,110 590,170 630,200 Z" fill="{deep}"/>'
           f'<path d="M710,200 C780,110 830,170 790,200 Z" fill="{deep}"/>')
    body = ('<circle cx="710" cy="330" r="250" fill="#ec7451"/>' + confetti + tag + box
            + sprig(920, 500, 1.3, 20, color=WHITE, berries=False)
            + f'<circle cx="980" cy="430" r="9" fill="{SUN}"/>')
    return svg(1200, 560, body, coral)


def welcome_hero() -> str:
    """The welcome banner: an open envelope with a card and a juniper sprig, in teal."""
    teal, pale = "#0e7490", "#dff1f5"
    body = (
        f'<circle cx="600" cy="320" r="230" fill="#c5e6ee"/>'
        f'<rect x="420" y="300" width="360" height="220" rx="10" fill="{teal}"/>'
        f'<rect x="460" y="170" width="280" height="230" rx="8" fill="{WHITE}"/>'
        f'<rect x="500" y="215" width="170" height="18" rx="9" fill="{teal}"/>'
        f'<rect x="500" y="255" width="200" height="12" rx="6" fill="#9fcbd6"/>'
        f'<rect x="500" y="282" width="150" height="12" rx="6" fill="#9fcbd6"/>'
        f'<path d="M420,310 L600,430 L780,310 V520 H420 Z" fill="#0b5f76"/>'
        f'<path d="M420,520 L600,400 L780,520 Z" fill="{teal}"/>'
        + sprig(800, 520, 1.6, 24) + sprig(400, 520, 1.4, -26, berries=False)
        + "".join(f'<circle cx="{x}" cy="{y}" r="{r}" fill="{c}"/>'
                  for x, y, r, c in ((230, 160, 14, SUN), (980, 180, 10, teal), (1010, 420, 16, SUN),
                                     (170, 420, 9, teal), (300, 300, 6, teal), (930, 300, 7, SUN)))
    )
    return svg(1200, 560, body, pale)


def icon(kind: str) -> str:
    """A round teal icon for the welcome email's three steps."""
    teal, pale = "#0e7490", "#dff1f5"
    glyphs = {
        "profile": (f'<circle cx="96" cy="78" r="24" fill="{teal}"/>'
                    f'<path d="M52,146 q44,-62 88,0 Z" fill="{teal}"/>'),
        "shop": (f'<rect x="56" y="88" width="80" height="56" fill="{teal}"/>'
                 f'<rect x="46" y="56" width="100" height="22" rx="4" fill="{teal}"/>'
                 + "".join(f'<path d="M{x},76 a10,10 0 0 0 20,0 Z" fill="{teal}"/>' for x in (46, 66, 86, 106, 126))
                 + f'<rect x="84" y="108" width="24" height="36" rx="3" fill="{pale}"/>'),
        "letter": (f'<rect x="46" y="62" width="100" height="72" rx="8" fill="{teal}"/>'
                   f'<path d="M50,68 L96,104 L142,68" stroke="{pale}" stroke-width="7" fill="none" '
                   f'stroke-linejoin="round"/>'),
    }
    return svg(192, 192, f'<circle cx="96" cy="96" r="92" fill="{pale}"/>{glyphs[kind]}', None)


def parcel() -> str:
    """A parcel icon for the receipt."""
    navy, pale = "#1e3a8a", "#e3e9f7"
    body = (f'<circle cx="96" cy="96" r="92" fill="{pale}"/>'
            f'<path d="M96,40 L150,66 V130 L96,156 L42,130 V66 Z" fill="{navy}"/>'
            f'<path d="M42,66 L96,92 L150,66" stroke="{pale}" stroke-width="6" fill="none" stroke-linejoin="round"/>'
            f'<path d="M96,92 V156" stroke="{pale}" stroke-width="6"/>'
            f'<path d="M69,53 L123,79 V100" stroke="{SUN}" stroke-width="8" fill="none"/>')
    return svg(192, 192, body, None)


def logo(text_color: str, mark: str) -> str:
    """The fictional shop's wordmark with a sprig mark, on a transparent background."""
    body = (sprig(46, 88, 0.52, 8, color=mark)
            + f'<text x="92" y="64" font-family="Liberation Serif, DejaVu Serif, serif" font-size="46" '
              f'font-weight="700" fill="{text_color}" letter-spacing="0.5">Juniper &amp; Co.</text>')
    return svg(440, 96, body, None)


# file name -> (width, height, scene); PNG files keep transparency, JPEG files are photos-like banners.
ART = {
    "newsletter-hero.jpg": newsletter_hero,
    "workshop-mugs.jpg": workshop_mugs,
    "market-stall.jpg": market_stall,
    "product-vase.jpg": product_vase,
    "product-candle.jpg": product_candle,
    "product-planter.jpg": product_planter,
    "studio-front.jpg": studio_front,
    "promotion-hero.jpg": promotion_hero,
    "welcome-hero.jpg": welcome_hero,
    "icon-profile.png": lambda: icon("profile"),
    "icon-shop.png": lambda: icon("shop"),
    "icon-letter.png": lambda: icon("letter"),
    "icon-parcel.png": parcel,
    "logo-dark.png": lambda: logo(DEEP, GREEN),
    "logo-light.png": lambda: logo(WHITE, WHITE),
}


def render_all(only: set[str] | None = None) -> list[Path]:
    """Render every scene (or the named ones) into ASSETS; fail if one is over MAX_BYTES."""
    ASSETS.mkdir(parents=True, exist_ok=True)
    written = []
    with launch_chromium() as browser:
        for name, scene in ART.items():
            if only and name not in only:
                continue
            markup = scene()
            width = int(markup.split('width="', 1)[1].split('"', 1)[0])
            height = int(markup.split('height="', 1)[1].split('"', 1)[0])
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_content(f"<html><body style='margin:0'>{markup}</body></html>")
            path = ASSETS / name
            if name.endswith(".jpg"):
                page.screenshot(path=str(path), type="jpeg", quality=82)
            else:
                page.screenshot(path=str(path), type="png", omit_background=True)
            page.close()
            size = path.stat().st_size
            if size > MAX_BYTES:
                raise SystemExit(f"{name} is {size} bytes, over {MAX_BYTES}")
            written.append(path)
    return written


if __name__ == "__main__":
    for written_path in render_all(set(sys.argv[1:]) or None):
        print(f"{written_path.relative_to(ROOT)}  {written_path.stat().st_size:,} bytes")
