"""Row generator for the comparison benchmark's tenant-management database.

Produces COPY text rows for the tables in schema.sql with the entropy of
real application data: names, addresses and free text drawn from word lists
with a Zipf distribution and sentence templates, plausible numbers, dates,
uuids, IP addresses and jsonb documents. A whole dump of these tables
compresses about 3-5:1 with zstd -3 (compare.py measures and prints it),
unlike md5 hex (which does not compress) or repeated constants (100:1).

Deterministic for a given seed. Used by compare.py; also runnable alone to
check speed and compressibility: python3 datagen.py [TENANTS] | zstd -3 | wc -c
"""

import itertools
import json
import random
import sys
import time

FIRST = """Anna Jürgen Mehmet Olga Chloé Liam Zofia Kwame Mary Søren Aiko Pedro Lena
Jonas Lukas Sophie Marie Emma Mia Hannah Paul Felix Leon Noah Elias Ben Finn Luis
Emil Mila Ella Clara Lea Ida Frieda Greta Mathilda Ayşe Fatma Emre Can Yusuf Elif
Zeynep Anton Oskar Theo Henry Jakob David Samuel Daniel Maria Laura Julia Sarah
Lisa Katharina Johanna Lara Alina Nina Eva Sofia Jana Piotr Katarzyna Agnieszka
Tomasz Paweł Magdalena Joanna Ivan Dmitri Natalia Svetlana Sergei Ahmed Omar Leila
Amira Karim Youssef Giulia Marco Francesca Luca Chiara Matteo Camille Lucas Manon
Hugo Léa Louis Inès James Oliver Charlotte Amelia Jack Harry Isla George Thomas
Kenji Yuki Hiroshi Mei Wei Jun Lin Priya Arjun Ananya Rahul Deepa Carlos Lucía
Javier Carmen Miguel Isabel Diego Elena Nikos Eleni Andreas Georgios Ingrid Lars
Astrid Erik Sven Birgit Jan Pieter Femke Sanne Daan Aoife Seán Niamh Ciarán""".split()

LAST = """Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann
Schäfer Koch Bauer Richter Klein Wolf Schröder Neumann Schwarz Zimmermann Braun
Krüger Hofmann Hartmann Lange Schmitt Werner Schmitz Krause Meier Lehmann Schmid
Schulze Maier Köhler Herrmann König Walter Mayer Huber Kaiser Fuchs Peters Lang
Scholz Möller Weiß Jung Hahn Schubert Vogel Friedrich Keller Günther Frank Berger
Winkler Roth Beck Lorenz Baumann Franke Albrecht Schuster Simon Ludwig Böhm Winter
Kraus Martin Schumacher Krämer Vogt Stein Jäger Otto Sommer Groß Seidel Heinrich
Brandt Haas Schreiber Graf Dietrich Ziegler Kuhn Kühn Pohl Engel Horn Busch Bergmann
Thomas Voigt Sauer Arnold Wolff Pfeiffer Yılmaz Kaya Demir Şahin Çelik Yıldız O'Brien
Kowalski Nowak Wiśniewski Wójcik Nguyen Tran Dubois Martin Bernard Rossi Russo
Ferrari Esposito Bianchi Andersen Nielsen Hansen Jensen García Fernández López
Martínez Okafor Mensah Tanaka Suzuki Watanabe Kim Park Chen Wang Li Zhang Silva
Santos Costa Papadopoulos Johansson Lindqvist de_Vries van_Dijk Jansen Murphy Kelly
Smith Jones Taylor Brown Williams Wilson Evans Patel Singh Kumar Ivanov Petrov""".split()

STREETS = """Hauptstraße Bahnhofstraße Gartenweg Schillerplatz Am_Kanal Ringstraße
Lindenallee Kirchgasse Bergstraße Schulstraße Dorfstraße Goethestraße Mühlenweg
Friedhofstraße Waldstraße Rosenweg Birkenweg Ahornweg Parkstraße Feldstraße
Wiesenweg Jahnstraße Mozartstraße Beethovenstraße Kastanienallee Uferstraße
Marktplatz Talstraße Blumenstraße Lessingstraße Sonnenweg Eichendorffstraße
Kantstraße Herderstraße Kirchstraße Brunnenstraße Poststraße Lindenstraße Heinestraße
Ackerstraße Torstraße Wilhelmstraße Friedrichstraße Hafenstraße Am_Deich Nordring
Südring Westend Ostpark Mittelweg Elbchaussee Rheinufer Isarweg Neckarstraße""".split()

LAST = [w.replace("_", " ") for w in LAST]
STREETS = [w.replace("_", " ") for w in STREETS]

CITIES = [("Berlin", "10"), ("Hamburg", "20"), ("München", "80"), ("Köln", "50"),
          ("Frankfurt am Main", "60"), ("Stuttgart", "70"), ("Düsseldorf", "40"),
          ("Leipzig", "04"), ("Dortmund", "44"), ("Essen", "45"), ("Bremen", "28"),
          ("Dresden", "01"), ("Hannover", "30"), ("Nürnberg", "90"), ("Duisburg", "47"),
          ("Bochum", "44"), ("Wuppertal", "42"), ("Bielefeld", "33"), ("Bonn", "53"),
          ("Münster", "48"), ("Mannheim", "68"), ("Karlsruhe", "76"), ("Augsburg", "86"),
          ("Wiesbaden", "65"), ("Freiburg im Breisgau", "79"), ("Kiel", "24"),
          ("Rostock", "18"), ("Potsdam", "14"), ("Regensburg", "93"), ("Heidelberg", "69")]

PROPERTY_NAMES = """Lindenhof Parkblick Riverside Alte_Mühle Sonnenhaus Harbour_View
Rosengarten Kastanienhof Elbterrassen Am_Stadtpark Zum_Löwen Neue_Mitte Südhang
Seeblick Waldrand Altstadtquartier Gartenhaus Hofgarten Wiesengrund Brückenhaus""".split()

PROPERTY_NAMES = [w.replace("_", " ") for w in PROPERTY_NAMES]

# Vocabulary for free text, most frequent first (drawn with Zipf weights).
VOCAB = """the a to and of in for on is was with at from by tenant unit please
will be has been not we it this that as are apartment flat lease rent repair
heating water building owner caretaker contract payment deposit invoice key keys
kitchen bathroom window door balcony garage cellar stairwell roof meter reading
notice month months week weeks day days today tomorrow yesterday morning evening
call called email emailed letter sent received confirmed requested reported
scheduled completed pending open closed again still after before during because
but also new old broken leaking noisy cold warm damp mould mold smell noise
neighbour neighbours neighbor upstairs downstairs ground floor first second third
top attic courtyard garden parking bike bicycle storage lift elevator entrance
intercom doorbell mailbox letterbox light lights bulb socket fuse boiler radiator
radiators thermostat shower bath toilet sink tap drain pipe pipes gutter wall walls
ceiling paint painting carpet parquet tiles laminate floorboards cracked stained
replaced replace fix fixed check checked inspect inspection inspected visit visited
appointment access permission agreed agreement signed signature renewal renew
extend extension terminate termination move moving moved in out handover
inventory photos photo documented damage damages cleaning cleaned cleaner
rubbish waste bins collection recycling snow clearing gardening service charge
charges utilities electricity gas heating costs statement annual settlement
balance overdue late reminder reminders arrears direct debit transfer bank
account standing order refund refunded credit partial full amount paid unpaid
installment plan guarantor reference references income proof employer employment
documents copy copies id passport residence permit registration insurance
liability household contents policy claim claims adjuster quote quotes
contractor contractors plumber electrician locksmith roofer painter glazier
carpenter technician engineer surveyor estimate cost costs approved declined
approval budget spending priority urgent emergency routine minor major small
large several some any all each every other another same different next last
first only very quite rather much many more most less least few little about
around approximately until since while when where which who what how why there
here then than so if or nor yet can could should would may might must shall do
does did done have had having get got getting make made making take took taken
give gave given said says say tell told ask asked need needs needed want wanted
like likes liked know knew think thought see saw seen come came go went gone
look looked find found keep kept leave left put let try tried use used work
worked working start started stop stopped wait waited help helped show showed
turn turned run running hold held bring brought write wrote written read sit
stand lose lost pay paying meet met include included continue continued set
learn change changed lead understand follow followed create spend grow open
walk offer offered remember love consider appear buy bought serve die send
expect build built stay fall cut reach kill remain suggest raise pass sell
require report decide pull mr mrs ms dr family children child kids dog cat pet
pets smoking smoker quiet hours party guests visitor visitors sublet subletting
airbnb short term long term furnished unfurnished studio one two three four
five six seven eight nine ten twelve fifteen twenty thirty euro euros percent
per square metre metres meters size area living room bedroom bedrooms hall
hallway corridor laundry dryer washing machine dishwasher fridge freezer oven
stove hob extractor fan ventilation vent air humidity condensation insulation
draught draft energy efficiency certificate class rating consumption usage
peak average estimated actual reading readings meter meters smart gateway
firmware battery signal offline online portal app login password reset message
messages ticket tickets case status update updated updates note notes comment
comments remark remarks history record records file files scan scanned attached
attachment forwarded forward reply replied response respond responded answered
following regarding concerning re fw according attached below above enclosed
thanks thank regards kind best dear hello hi sorry unfortunately apologies
delay delayed postponed cancelled rescheduled confirmed confirmation""".split()

ISSUES = """leaking tap|blocked drain|broken heating|no hot water|mould in the bathroom|
faulty intercom|broken window latch|noisy neighbours|lift out of order|damp cellar|
broken door lock|flickering stairwell light|cracked tiles|blocked gutter|
radiator not warming|smoke detector beeping|wasp nest on balcony|
parking space occupied|missing mailbox key|water stain on ceiling|
draught from window|shower drain slow|oven not heating|fridge door seal""".replace("\n", "").split("|")
ROOMS = ["kitchen", "bathroom", "living room", "bedroom", "hallway", "cellar", "balcony",
         "stairwell", "garage", "attic", "laundry room", "courtyard", "entrance"]
ACTIONS = ["plumber booked", "caretaker informed", "contractor quote requested",
           "tenant to send photos", "inspection scheduled", "parts ordered",
           "repair completed", "insurance notified", "reminder sent", "no action needed",
           "owner approval requested", "follow-up call planned", "ticket closed"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
METHODS = ["sepa", "sepa", "sepa", "transfer", "transfer", "card", "cash", "standing order"]
ACTORS = ["system", "import-job", "scheduler", "caretaker", "portal"] + \
    [f"{f.lower()}.{l.lower()}@hausverwaltung.example" for f, l in
     [("anna", "weber"), ("jonas", "koch"), ("lena", "hartmann"), ("mehmet", "kaya"),
      ("clara", "neumann"), ("piotr", "nowak"), ("sophie", "lang"), ("david", "roth")]]
USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.6261.64 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0.0.0 Safari/537.36 Edg/121.0.2277.128",
    "okhttp/4.12.0", "python-requests/2.31.0", "hausverwaltung-app/3.8.2 (Android 13)",
    "hausverwaltung-app/3.9.0 (iOS 17.2)", "import-job/1.4", None, None]
AMENITIES = ["lift", "bike-room", "garden", "sauna", "gym", "concierge", "parking",
             "ev-charging", "roof terrace", "playground", "laundry", "storage", "solar"]
TAGS = ["student", "pet-owner", "smoker", "corporate", "late-payer", "vip", "senior",
        "shared-flat", "social-housing", "guarantor", "expat", "long-term"]
LANGS = ["de", "de", "de", "en", "en", "tr", "pl", "fr", "it", "ru", "ar", "es"]
LEASE_STATUS = ["active"] * 6 + ["pending", "ended", "ended", "terminated"]
ENTITIES = ["tenant", "lease", "payment", "property", "reading", "ticket"]
AUDIT_ACTIONS = ["insert", "update", "update", "update", "delete", "login", "export"]
CONDITIONS = ["good", "good", "fair", "needs repair", "renovated", "poor"]
EPOCH_NIGHT1 = 1709251200  # 2024-03-01 00:00:00 UTC: the first simulated night
DAY = 86400


def ts(t):
    return time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(t))


def date(t):
    return time.strftime("%Y-%m-%d", time.gmtime(t))


def esc(s):
    """COPY text-format escaping."""
    if s is None:
        return "\\N"
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def nul(s):
    return "\\N" if s is None else s


class Gen:
    """State of the generated database: row ids so far and the random stream."""

    def __init__(self, tenants, seed=42):
        self.rng = random.Random(seed)
        self.n_tenants0 = tenants
        self.n_properties = max(10, tenants // 25)
        self.max_id = {"tenants": 0, "leases": 0, "utility_readings": 0, "payments": 0, "audit_log": 0}
        self.meters = []  # (property_id, meter_id, kind, base, rate)
        weights = [1.0 / (r + 2.7) for r in range(len(VOCAB))]
        self.cum = list(itertools.accumulate(weights))
        self.properties_meta = {}

    # ---- text -----------------------------------------------------------
    def words(self, k):
        return " ".join(self.rng.choices(VOCAB, cum_weights=self.cum, k=k))

    def sentence(self, t=None):
        r = self.rng
        kind = r.random()
        if kind < 0.55:
            s = self.words(r.randint(5, 17))
            return s[0].upper() + s[1:] + r.choice(".....!?")
        if t is None:
            t = EPOCH_NIGHT1 - r.randint(0, 900) * DAY
        if kind < 0.75:
            return (f"{r.choice(['Tenant', 'Mrs ' + r.choice(LAST), 'Mr ' + r.choice(LAST), 'Neighbour', 'Caretaker'])} "
                    f"reported {r.choice(ISSUES)} in the {r.choice(ROOMS)} on {date(t)}; "
                    f"{r.choice(ACTIONS)}.")
        if kind < 0.87:
            return (f"Paid {r.randint(50, 2500)},{r.randint(0, 99):02d} EUR by {r.choice(METHODS)}, "
                    f"reference {r.choice(['INV', 'NK', 'KT', 'MI'])}-{r.randint(2019, 2024)}-{r.randint(1, 99999):05d}.")
        if kind < 0.95:
            return (f"Appointment with {r.choice(FIRST)} {r.choice(LAST)} on {r.choice(WEEKDAYS)} "
                    f"{date(t + r.randint(1, 20) * DAY)} at {r.randint(7, 18)}:{r.choice(['00', '15', '30', '45'])}.")
        return f"Call back on +49 {r.randint(150, 179)} {r.randint(1000000, 9999999)}."

    def paragraph(self, n, t=None):
        return " ".join(self.sentence(t) for _ in range(n))

    def uuid(self):
        h = "%032x" % self.rng.getrandbits(128)
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    def phone(self):
        r = self.rng
        return f"+49 {r.randint(150, 179)} {r.randint(1000000, 99999999)}"

    def email(self, first, last, i):
        r = self.rng
        dom = r.choice(["gmail.com", "web.de", "gmx.de", "t-online.de", "outlook.com",
                        "posteo.de", "icloud.com", "mailbox.org", "yahoo.de"])
        f = first.lower().replace("é", "e").replace("ü", "ue").replace("ö", "oe")
        l = last.lower().replace(" ", "").replace("'", "").replace("ü", "ue").replace("ö", "oe").replace("ä", "ae")
        style = i % 4
        if style == 0:
            return f"{f}.{l}@{dom}"
        if style == 1:
            return f"{f[0]}{l}{r.randint(1, 99)}@{dom}"
        if style == 2:
            return f"{l}.{f}{r.randint(1960, 2005)}@{dom}"
        return f"{f}{r.randint(1, 9999)}@{dom}"

    # ---- rows -----------------------------------------------------------
    def tenant_row(self, t_created):
        r = self.rng
        self.max_id["tenants"] += 1
        i = self.max_id["tenants"]
        first, last = r.choice(FIRST), r.choice(LAST)
        ntags = r.choice([0, 0, 0, 1, 1, 2])
        tags = "{" + ",".join(r.sample(TAGS, ntags)) + "}"
        prefs = {
            "language": r.choice(LANGS),
            "contact": {"email": r.random() < 0.8, "sms": r.random() < 0.3, "post": r.random() < 0.1},
            "newsletter": r.random() < 0.2,
            "quiet_hours": [22, 7] if r.random() < 0.5 else [23, 6],
        }
        if r.random() < 0.4:
            prefs["emergency_contact"] = {"name": f"{r.choice(FIRST)} {r.choice(LAST)}", "phone": self.phone()}
        if r.random() < 0.3:
            prefs["parking"] = {"space": f"P{r.randint(1, 120)}", "ev": r.random() < 0.2}
        notes = None if r.random() < 0.25 else self.paragraph(r.randint(1, 4), t_created)
        updated = t_created + r.randint(0, 400) * DAY + r.randint(0, DAY)
        return "\t".join((
            str(i), self.uuid(), esc(f"{first} {last}"), esc(self.email(first, last, i)),
            nul(None if r.random() < 0.08 else self.phone()),
            date(EPOCH_NIGHT1 - r.randint(18 * 365, 85 * 365) * DAY),
            f"{r.randint(900, 11000)}.{r.randint(0, 99):02d}", str(r.randint(300, 850)),
            esc(tags), esc(json.dumps(prefs, ensure_ascii=False)), esc(notes),
            ts(t_created), ts(min(updated, EPOCH_NIGHT1))))

    def property_row(self, i):
        r = self.rng
        city, plz = r.choice(CITIES)
        units = r.randint(4, 60)
        amen = "{" + ",".join(f'"{a}"' if " " in a else a for a in r.sample(AMENITIES, r.randint(0, 4))) + "}"
        meta = {
            "energy_class": r.choice(["A+", "A", "B", "C", "D", "E", "F"]),
            "built": r.randint(1890, 2022),
            "coordinates": {"lat": round(47 + r.random() * 8, 6), "lon": round(6 + r.random() * 9, 6)},
            "heating": r.choice(["district", "gas", "heat-pump", "oil", "pellets"]),
            "caretaker": f"{r.choice(FIRST)} {r.choice(LAST)}",
            "floors": r.randint(2, 12),
            "last_inspection": date(EPOCH_NIGHT1 - r.randint(0, 700) * DAY),
            "condition": r.choice(CONDITIONS),
        }
        for kind in ("electric", "gas", "water"):
            if kind == "gas" and meta["heating"] != "gas":
                continue
            self.meters.append((i, f"{kind[:2].upper()}-{r.randint(10000000, 99999999)}", kind,
                                r.uniform(1000, 90000), r.uniform(5, 400)))
        return "\t".join((
            str(i), esc(f"{r.choice(PROPERTY_NAMES)} {i}"),
            esc(f"{r.choice(STREETS)} {r.randint(1, 180)}{r.choice(['', '', '', 'a', 'b'])}"),
            esc(city), f"{plz}{r.randint(100, 999)}", str(units), esc(amen),
            f"{r.randint(250000, 9000000)}.{r.randint(0, 99):02d}",
            esc(json.dumps(meta, ensure_ascii=False)), esc(self.paragraph(r.randint(3, 8))),
            ts(EPOCH_NIGHT1 - r.randint(400, 7000) * DAY)))

    def lease_row(self, t_signed):
        r = self.rng
        self.max_id["leases"] += 1
        i = self.max_id["leases"]
        rent = r.randint(350, 2800)
        start = t_signed + r.randint(7, 45) * DAY
        end = start + r.choice([1, 2, 3, 5, 10]) * 365 * DAY
        terms = {
            "pets_allowed": r.random() < 0.3,
            "notice_months": r.choice([1, 3, 3, 3, 6]),
            "indexation": {"index": "VPI", "floor_pct": round(r.random() * 2.5, 2)},
            "utilities_included": r.sample(["water", "heating", "waste", "internet", "cleaning"], r.randint(0, 3)),
            "clauses": [self.sentence(t_signed) for _ in range(r.randint(1, 3))],
        }
        return "\t".join((
            str(i), str(r.randint(1, self.max_id["tenants"])), str(r.randint(1, self.n_properties)),
            f"Unit {r.randint(1, 60)}{r.choice('ABCD')}", date(start), date(end),
            f"{rent}.{r.choice(['00', '00', '50', str(r.randint(10, 99))])}", f"{rent * 3}.00",
            r.choice(LEASE_STATUS), esc(json.dumps(terms, ensure_ascii=False)),
            esc(None if r.random() < 0.5 else self.paragraph(r.randint(1, 2), t_signed)),
            nul(None if r.random() < 0.1 else ts(t_signed)), ts(min(start, EPOCH_NIGHT1))))

    def reading_row(self, t):
        r = self.rng
        self.max_id["utility_readings"] += 1
        i = self.max_id["utility_readings"]
        prop, meter, kind, base, rate = r.choice(self.meters)
        days = (t - (EPOCH_NIGHT1 - 1200 * DAY)) / DAY
        peak = r.randint(20, 400)
        hourly = "{" + ",".join(str(int(peak * (0.3 + 0.7 * (h in (7, 8, 12, 18, 19, 20, 21))) * r.uniform(0.6, 1.3)))
                                for h in range(24)) + "}"
        payload = None if r.random() < 0.15 else json.dumps({
            "gw": f"gw-{prop:05d}", "fw": r.choice(["2.4.1", "2.4.1", "2.5.0", "3.0.2"]),
            "rssi": -r.randint(40, 105), "battery": r.randint(5, 100),
            "quality": r.choice(["ok", "ok", "ok", "ok", "estimated", "retransmitted"])})
        return "\t".join((
            str(i), str(prop), meter, kind, ts(t), f"{base + rate * days + r.uniform(0, 50):.3f}",
            hourly, nul(payload)))

    def payment_row(self, t):
        r = self.rng
        self.max_id["payments"] += 1
        i = self.max_id["payments"]
        lease = r.randint(1, self.max_id["leases"])
        m = r.random()
        memo = (None if m < 0.3 else
                f"Miete {time.strftime('%m/%Y', time.gmtime(t))} {r.choice(FIRST)} {r.choice(LAST)}" if m < 0.7 else
                f"Nebenkosten {r.randint(2019, 2024)} Unit {r.randint(1, 60)}{r.choice('ABCD')}" if m < 0.85 else
                self.sentence(t))
        return "\t".join((
            str(i), str(lease), f"{r.randint(40, 3000)}.{r.randint(0, 99):02d}",
            "CHF" if r.random() < 0.02 else "EUR", r.choice(METHODS), ts(t),
            f"PAY-{time.strftime('%Y%m', time.gmtime(t))}-{i:08d}-{r.getrandbits(32):08X}", esc(memo)))

    def audit_row(self, t, entity=None, entity_id=None, diff=None):
        r = self.rng
        self.max_id["audit_log"] += 1
        i = self.max_id["audit_log"]
        entity = entity or r.choice(ENTITIES)
        if diff is None:
            field = r.choice(["status", "monthly_rent", "phone", "email", "notes", "amount", "unit", "method"])
            diff = {"changes": {field: [self.words(r.randint(1, 3)), self.words(r.randint(1, 3))]}}
            if r.random() < 0.5:
                diff["reason"] = self.sentence(t)
        diff["entity"] = entity
        diff["source"] = r.choice(["web", "web", "app", "api", "batch"])
        ip = None if r.random() < 0.2 else f"{r.choice([10, 172, 192, 84, 91, 217])}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"
        return "\t".join((
            str(i), ts(t), esc(r.choice(ACTORS)), r.choice(AUDIT_ACTIONS), entity,
            str(entity_id or r.randint(1, 100000)), nul(ip), self.uuid(),
            esc(r.choice(USER_AGENTS)), esc(json.dumps(diff, ensure_ascii=False))))

    # ---- whole loads ------------------------------------------------------
    def initial_load(self):
        """Yield SQL text: COPY blocks for the initial database."""
        r = self.rng
        n = self.n_tenants0
        t0 = EPOCH_NIGHT1 - 1200 * DAY
        yield "COPY app.properties FROM stdin;\n"
        yield from batched(self.property_row(i) for i in range(1, self.n_properties + 1))
        yield "\\.\n"
        yield "COPY app.tenants FROM stdin;\n"
        yield from batched(self.tenant_row(t0 + int(k * 1150 * DAY / n) + r.randint(0, DAY)) for k in range(n))
        yield "\\.\n"
        nl = int(n * 1.3)
        yield "COPY app.leases FROM stdin;\n"
        yield from batched(self.lease_row(t0 + int(k * 1150 * DAY / nl) + r.randint(0, DAY)) for k in range(nl))
        yield "\\.\n"
        for table, per, fn in (("utility_readings", 12, self.reading_row),
                               ("payments", 15, self.payment_row),
                               ("audit_log", 10, self.audit_row)):
            m = n * per
            yield f"COPY app.{table} FROM stdin;\n"
            yield from batched(fn(t0 + int(k * 1200 * DAY / m)) for k in range(m))
            yield "\\.\n"

    def day(self, night):
        """Yield SQL text for one simulated day before NIGHT (1-based):
        ~1% appended rows, ~0.75% of tenants and leases updated, ~1% of
        properties updated, ~0.1% of readings, payments and audit rows deleted."""
        r = self.rng
        day0 = EPOCH_NIGHT1 + (night - 2) * DAY  # the day before the night's dump
        n_t, n_l = self.max_id["tenants"], self.max_id["leases"]

        def when():
            return day0 + r.randint(6 * 3600, 22 * 3600)

        # Updates, staged with COPY and applied with UPDATE ... FROM.
        up_t = sorted(r.sample(range(1, n_t + 1), max(1, int(n_t * 0.0075))))
        yield "COPY app.stage_tenant_updates FROM stdin;\n"
        yield from batched("\t".join((
            str(i), nul(self.phone() if r.random() < 0.3 else None),
            nul(esc(self.email(r.choice(FIRST), r.choice(LAST), i)) if r.random() < 0.15 else None),
            esc(self.sentence(day0) if r.random() < 0.6 else None),
            nul(r.choice(LANGS) if r.random() < 0.1 else None), ts(when()))) for i in up_t)
        yield "\\.\n"
        up_l = sorted(r.sample(range(1, n_l + 1), max(1, int(n_l * 0.0075))))
        yield "COPY app.stage_lease_updates FROM stdin;\n"
        yield from batched("\t".join((
            str(i), nul(r.choice(LEASE_STATUS) if r.random() < 0.4 else None),
            f"{1 + r.choice([0, 0, 0.015, 0.02, 0.03, -0.01]):.3f}", f"{r.random() * 2.5:.2f}",
            esc(self.sentence(day0) if r.random() < 0.4 else None), ts(when()))) for i in up_l)
        yield "\\.\n"
        up_p = sorted(r.sample(range(1, self.n_properties + 1), max(1, self.n_properties // 100)))
        yield "COPY app.stage_property_updates FROM stdin;\n"
        yield from batched(f"{i}\t{date(day0)}\t{r.choice(CONDITIONS)}" for i in up_p)
        yield "\\.\n"
        yield """
UPDATE app.tenants t SET phone = coalesce(u.phone, t.phone), email = coalesce(u.email, t.email),
    notes = CASE WHEN u.notes_add IS NULL THEN t.notes ELSE coalesce(t.notes || ' ', '') || u.notes_add END,
    preferences = CASE WHEN u.language IS NULL THEN t.preferences
                  ELSE jsonb_set(t.preferences, '{language}', to_jsonb(u.language)) END,
    updated_at = u.ts
  FROM app.stage_tenant_updates u WHERE t.id = u.id;
UPDATE app.leases l SET status = coalesce(u.status, l.status),
    monthly_rent = round(l.monthly_rent * u.rent_factor, 2),
    terms = jsonb_set(l.terms, '{indexation,floor_pct}', to_jsonb(u.floor_pct)),
    notes = CASE WHEN u.notes_add IS NULL THEN l.notes ELSE coalesce(l.notes || ' ', '') || u.notes_add END,
    updated_at = u.ts
  FROM app.stage_lease_updates u WHERE l.id = u.id;
UPDATE app.properties p SET metadata = p.metadata || jsonb_build_object('last_inspection', u.inspected, 'condition', u.condition)
  FROM app.stage_property_updates u WHERE p.id = u.id;
TRUNCATE app.stage_tenant_updates, app.stage_lease_updates, app.stage_property_updates;
"""
        # Deletes: ~0.1% of the high-volume tables, scattered.
        for table in ("utility_readings", "payments", "audit_log"):
            mx = self.max_id[table]
            ids = sorted(set(r.randint(1, mx) for _ in range(max(1, mx // 1000))))
            yield f"DELETE FROM app.{table} WHERE id = ANY('{{{','.join(map(str, ids))}}}'::bigint[]);\n"
        # Appends: new tenants and leases (0.2%), ~1% new readings, payments, audit rows.
        yield "COPY app.tenants FROM stdin;\n"
        yield from batched(self.tenant_row(when()) for _ in range(max(1, n_t // 500)))
        yield "\\.\n"
        yield "COPY app.leases FROM stdin;\n"
        yield from batched(self.lease_row(when()) for _ in range(max(1, n_l // 500)))
        yield "\\.\n"
        for table, fn in (("utility_readings", self.reading_row), ("payments", self.payment_row)):
            m = self.max_id[table] // 100
            yield f"COPY app.{table} FROM stdin;\n"
            yield from batched(fn(day0 + int(k * DAY / m)) for k in range(m))
            yield "\\.\n"
        m = self.max_id["audit_log"] // 100
        yield "COPY app.audit_log FROM stdin;\n"
        yield from batched(itertools.chain(
            (self.audit_row(when(), "tenant", i) for i in up_t),
            (self.audit_row(when(), "lease", i) for i in up_l),
            (self.audit_row(day0 + int(k * DAY / m)) for k in range(max(0, m - len(up_t) - len(up_l))))))
        yield "\\.\n"


def batched(rows, n=2000):
    """Join rows into newline-terminated blocks of N rows."""
    it = iter(rows)
    while True:
        block = list(itertools.islice(it, n))
        if not block:
            return
        yield "\n".join(block) + "\n"


if __name__ == "__main__":
    g = Gen(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
    out = sys.stdout
    for s in g.initial_load():
        out.write(s)
    for night in (1, 2):
        for s in g.day(night):
            out.write(s)
