/* The simulated knowledge world: topics with facts in plain and technical
 * words, arithmetic tasks, and the requests users write about them.
 *
 * Every fact sentence holds exactly one integer, so that correctness can be
 * checked in any text by finding the fact's cue word and reading the number
 * next to it; tests/test_sim.c checks the table's invariants (one number,
 * cues unique within a topic, plain sentences free of technical terms).
 */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "sim_internal.h"

const struct rlhi__topic rlhi__topics[] = {
    {"planets", "the planets", {
        {"planets|planetary", 8,
         "Our solar system has %d planets going around the Sun.",
         "The solar system contains %d [planetary bodies] in "
         "[heliocentric orbit]."},
        {"moons|satellites", 2, "Mars has %d small moons.",
         "Mars possesses %d [natural satellites], Phobos and Deimos."},
        {"jupiter", 1300,
         "Jupiter is so big that about %d Earths could fit inside it.",
         "The [volumetric capacity] of Jupiter exceeds that of Earth by a "
         "factor of roughly %d."},
        {"venus", 243, "One day on Venus lasts about %d Earth days.",
         "Venus has a [sidereal rotation period] of approximately %d Earth "
         "days."},
        {"sunshine|photons", 8,
         "Sunshine takes about %d minutes to reach us on Earth.",
         "Solar [photons] take approximately %d minutes to traverse one "
         "[astronomical unit]."}}},
    {"oceans", "the oceans", {
        {"oceans|oceanic", 5, "There are %d big oceans on Earth.",
         "Earth has %d principal [oceanic basins] in the standard "
         "[hydrographic classification]."},
        {"deep|depth", 11000,
         "The deepest spot in the sea is about %d meters down.",
         "The Challenger Deep reaches a [bathymetric depth] of roughly %d "
         "meters."},
        {"salt|salinity", 35,
         "Each liter of sea water holds about %d grams of salt.",
         "Mean seawater [salinity] is approximately %d grams of dissolved "
         "solutes per kilogram."},
        {"surface", 71, "Water covers about %d percent of the surface of "
         "our planet.",
         "The [hydrosphere] covers approximately %d percent of the surface "
         "of the Earth."},
        {"tides|tidal", 2, "Most beaches get %d high tides every day.",
         "Most coastlines experience %d [semidiurnal] tidal maxima per "
         "[lunar day]."}}},
    {"heart", "the human heart", {
        {"chambers", 4, "Your heart has %d rooms inside, called chambers.",
         "The heart comprises %d chambers: two [atria] and two "
         "[ventricles]."},
        {"beats|rate", 70,
         "A resting heart beats about %d times a minute.",
         "A typical resting [cardiac rate] is approximately %d beats per "
         "minute."},
        {"blood", 5, "An adult body holds about %d liters of blood.",
         "Adult [circulating blood volume] is approximately %d liters."},
        {"tubes|vasculature", 100000,
         "Laid end to end, the tubes that carry it around your body would "
         "stretch about %d kilometers.",
         "The total length of the [vasculature] is estimated at %d "
         "kilometers."},
        {"weighs|mass", 300, "A grown-up heart weighs about %d grams.",
         "The adult [myocardial] organ has a mass of approximately %d "
         "grams."}}},
    {"bees", "honey bees", {
        {"eyes|ocelli", 5, "A honey bee has %d eyes.",
         "A honey bee has %d visual organs: two [compound eyes] and three "
         "[ocelli]."},
        {"wings|flap|wingbeat", 200,
         "Bees flap their wings about %d times a second.",
         "Bee [wingbeat frequency] is approximately %d hertz."},
        {"queen", 2000, "A queen bee can lay about %d eggs in one day.",
         "A queen achieves an [oviposition rate] of up to %d eggs per day."},
        {"hive|colony", 50000, "A busy hive can hold about %d bees.",
         "A mature [eusocial] colony can number approximately %d "
         "individuals."},
        {"flowers|foraging", 100,
         "To fill itself with nectar a bee visits about %d flowers.",
         "A single [foraging bout] involves visits to roughly %d flowers for "
         "[nectar collection]."}}},
    {"dogs", "dogs", {
        {"teeth|dentition", 42, "Grown dogs have %d teeth.",
         "Adult canine [permanent dentition] comprises %d teeth."},
        {"smell|olfactory", 300,
         "A dog's nose has about %d million smell sensors.",
         "Dogs possess approximately %d million [olfactory receptors]."},
        {"temperature|thermoregulat", 39,
         "A healthy dog has a body temperature of about %d degrees "
         "Celsius.",
         "Normal canine [core body temperature] is approximately %d degrees "
         "Celsius."},
        {"puppies|gestation", 63, "Puppies grow inside their mother for "
         "about %d days.",
         "Canine [gestation period] is approximately %d days."},
        {"breeds|taxonom", 360, "There are about %d dog breeds in the "
         "world.",
         "Kennel federations recognise roughly %d breeds of [Canis "
         "familiaris] in their [taxonomy]."}}},
    {"pasta", "cooking pasta", {
        {"pound", 4, "Use about %d liters of water for each pound of pasta.",
         "Use approximately %d liters of water per pound to keep the "
         "[starch concentration] low."},
        {"salt|salinity", 10,
         "Add about %d grams of salt to each liter of water.",
         "Season the water to a [salinity] of roughly %d grams per liter."},
        {"minutes|cooking time", 9,
         "Spaghetti needs about %d minutes in the pot.",
         "Spaghetti reaches [al dente] texture after approximately %d "
         "minutes."},
        {"shapes|formats", 350, "There are about %d shapes of pasta.",
         "Italian producers manufacture roughly %d distinct [extruded "
         "formats] of pasta."},
        {"boil|boiling", 100,
         "Water boils at %d degrees Celsius at sea level.",
         "The [boiling point] of water is %d degrees Celsius at standard "
         "[atmospheric pressure]."}}},
    {"bread", "baking bread", {
        {"oven|bake", 230, "Bake most loaves in an oven at about %d degrees "
         "Celsius.",
         "Most loaves bake at approximately %d degrees Celsius to drive "
         "[Maillard browning]."},
        {"rise|fermentation", 2, "Let the dough rise for about %d hours.",
         "The [bulk fermentation] stage of the dough lasts approximately %d "
         "hours."},
        {"water|hydration", 65,
         "A simple dough uses about %d parts water to a hundred parts "
         "flour.",
         "A standard lean dough has a [hydration ratio] of approximately %d "
         "percent."},
        {"knead|gluten", 10, "Knead the dough for about %d minutes.",
         "Kneading for approximately %d minutes develops the [gluten "
         "network]."},
        {"yeast", 7, "One packet of dry yeast weighs about %d grams.",
         "One sachet of [Saccharomyces cerevisiae] yeast contains "
         "approximately %d grams."}}},
    {"water", "water", {
        {"ice|freezing", 0, "Water turns to ice at %d degrees Celsius.",
         "The [freezing point] of water at standard [atmospheric pressure] "
         "is %d degrees Celsius."},
        {"atoms", 3, "Each bit of water is made of %d tiny atoms.",
         "Each water [molecule] consists of %d atoms bound by [covalent "
         "bonds]."},
        {"body|bodies", 60, "About %d percent of your body is water.",
         "Water constitutes approximately %d percent of adult human [body "
         "mass]."},
        {"fresh", 3, "Only about %d percent of the water on Earth is fresh.",
         "Only approximately %d percent of terrestrial water is [freshwater] "
         "by volume."},
        {"heaviest|density", 4,
         "Water is heaviest for its size at %d degrees Celsius.",
         "Water reaches its [maximum density] at approximately %d degrees "
         "Celsius."}}},
    {"volcanoes", "volcanoes", {
        {"active", 1350, "There are about %d active volcanoes on land.",
         "Approximately %d [subaerial] volcanoes are classified as "
         "active."},
        {"lava|magma", 1200, "Lava can be as hot as %d degrees Celsius.",
         "[Basaltic lava] erupts at temperatures up to approximately %d "
         "degrees Celsius."},
        {"ring|subduction", 75,
         "About %d percent of volcanoes sit around the Pacific Ring of "
         "Fire.",
         "Approximately %d percent of volcanoes lie along the Pacific "
         "[subduction zones]."},
        {"mauna|shield", 4169, "Mauna Loa in Hawaii is %d meters tall.",
         "The [shield volcano] Mauna Loa rises %d meters above sea level."},
        {"eruptions|eruptive", 50,
         "About %d volcanoes have eruptions in a typical year.",
         "Approximately %d volcanoes record [eruptive activity] in a "
         "typical year."}}},
    {"dinosaurs", "dinosaurs", {
        {"extinct|extinction", 66,
         "The big dinosaurs went extinct about %d million years ago.",
         "The non-avian dinosaurs underwent [mass extinction] approximately "
         "%d million years ago."},
        {"rex|tyrannosaur", 12, "T. rex was about %d meters long.",
         "[Tyrannosaurus rex] attained a body length of approximately %d "
         "meters."},
        {"teeth|dentition", 60,
         "The biggest meat eaters had about %d big teeth.",
         "The [theropod] carried approximately %d serrated teeth in its "
         "[dentition]."},
        {"kinds|genera", 1000,
         "Scientists have named about %d kinds of dinosaurs.",
         "Palaeontologists have described approximately %d valid "
         "[non-avian genera] of dinosaurs."},
        {"appeared|triassic", 230,
         "The first dinosaurs appeared about %d million years ago.",
         "Dinosaurs first appeared in the [Late Triassic] approximately %d "
         "million years ago."}}},
    {"arrays", "arrays in programming", {
        {"first|indexed", 0,
         "In most languages the first item of a list is at spot %d.",
         "Most languages use [zero-based indexing], so the first element "
         "is indexed %d."},
        {"looking|access", 1,
         "Looking up an item by its place takes %d quick step.",
         "[Random access] by index takes O(%d) [constant time]."},
        {"grow|capacity", 2, "When a growing list gets full it usually gets "
         "%d times bigger.",
         "A [dynamic array] typically multiplies its capacity by %d on "
         "[reallocation]."},
        {"bytes", 4, "A list of plain numbers uses %d bytes for each "
         "number.",
         "A [contiguous buffer] of standard integers occupies %d bytes per "
         "element."},
        {"dimensions", 2, "A table of rows and columns is a list with %d "
         "dimensions.",
         "A matrix is stored as an array with %d dimensions in "
         "[row-major order]."}}},
    {"binary", "binary numbers", {
        {"digits|symbols", 2, "Binary counting uses only %d digits.",
         "The [binary numeral system] uses %d symbols."},
        {"byte|octet", 8, "One byte is made of %d bits.",
         "One [octet] comprises %d bits."},
        {"values|distinct", 256, "Eight bits can hold %d different values.",
         "A group of eight bits encodes %d distinct values under "
         "[unsigned representation]."},
        {"ascii|characters", 128, "Classic text code covers %d characters.",
         "The [ASCII encoding] defines %d [code points]."},
        {"hex|nibble", 4, "One letter or digit of hex stands for %d bits.",
         "One [hexadecimal digit] represents a [nibble] of %d bits."}}},
    {"internet", "the internet", {
        {"address|ipv4", 32, "An old-style internet address is %d bits "
         "long.",
         "An [Internet Protocol version four] address has a width of %d "
         "bits."},
        {"port|https", 443,
         "Secure web pages usually use port %d.",
         "[HTTPS] traffic uses [TCP port] %d by default."},
        {"cables|submarine", 550,
         "About %d cables under the sea carry the internet between "
         "countries.",
         "Approximately %d [submarine cable systems] carry international "
         "[backbone traffic]."},
        {"websites|domains", 360,
         "There are about %d million websites with their own name.",
         "Approximately %d million [registered domains] exist across all "
         "[top-level domains]."},
        {"link|arpanet", 1969, "The first link of the internet was made in "
         "%d.",
         "The first [ARPANET] [packet-switched] link was established in "
         "%d."}}},
    {"rome", "ancient Rome", {
        {"founded|foundation", 753,
         "Legend says Rome was founded in %d BC.",
         "Roman [historiography] dates the foundation of the city to %d "
         "BC."},
        {"hills", 7, "Rome was built on %d hills.",
         "The city grew across %d hills of the [Tiber valley]."},
        {"colosseum|amphitheat", 50000,
         "The Colosseum could seat about %d people.",
         "The Flavian [amphitheatre] held approximately %d spectators."},
        {"roads|viae", 80000,
         "Rome built about %d kilometers of paved roads.",
         "The [viae publicae] network comprised approximately %d kilometers "
         "of paved road."},
        {"fell|western", 476, "The western part of the empire fell in %d "
         "AD.",
         "The [Western Roman Empire] ended with the [deposition] of Romulus "
         "Augustulus in %d AD."}}},
    {"moon", "the Moon", {
        {"away|semi-major", 384000,
         "The Moon is about %d kilometers away from us.",
         "The Moon orbits at a [semi-major axis] of approximately %d "
         "kilometers."},
        {"goes around|sidereal", 27,
         "The Moon goes around the Earth in about %d "
         "days.",
         "The [sidereal month] lasts approximately %d days."},
        {"weigh|gravity", 16,
         "On the Moon you weigh about %d percent of your weight at home.",
         "Lunar [surface gravity] is approximately %d percent of the "
         "terrestrial value."},
        {"walked|astronauts", 12, "%d people have walked on the Moon.",
         "%d astronauts performed [extravehicular activity] on the lunar "
         "surface."},
        {"landed|landing", 1969, "People first landed on the Moon in %d.",
         "The first [crewed lunar landing], Apollo Eleven, took place in "
         "%d."}}},
    {"trees", "trees", {
        {"oldest|bristlecone", 4800,
         "The oldest known tree is about %d years old.",
         "The oldest documented [Great Basin bristlecone pine] is "
         "approximately %d years old."},
        {"tallest|redwood", 115, "The tallest tree is about %d meters high.",
         "The tallest [Sequoia sempervirens] specimen measures "
         "approximately %d meters."},
        {"oxygen|photosynth", 100,
         "A big tree gives off about %d kilograms of oxygen a year.",
         "A mature tree releases approximately %d kilograms of oxygen per "
         "year through [photosynthesis]."},
        {"ring|annual", 1, "A tree adds %d ring to its trunk each year.",
         "A tree lays down %d [annual growth ring] of [secondary xylem] per "
         "year."},
        {"kinds|species", 73000,
         "There are about %d kinds of trees on Earth.",
         "Estimates of global [tree species richness] reach approximately "
         "%d."}}},
    {"music", "music", {
        {"notes|semitones", 12, "Western music uses %d notes in each "
         "octave.",
         "The [equal-tempered scale] divides the octave into %d "
         "[semitones]."},
        {"tune|concert", 440,
         "The note A that bands tune to sounds at %d beats a second.",
         "[Concert pitch] fixes the A above middle C at %d [hertz]."},
        {"piano|keys", 88, "A piano has %d keys.",
         "A standard piano [keyboard] spans %d keys."},
        {"strings|guitar", 6, "A normal guitar has %d strings.",
         "A standard guitar carries %d strings in [standard tuning]."},
        {"hear|audible", 20,
         "Young people can hear sounds as low as %d beats a second.",
         "The lower limit of the [audible frequency range] is approximately "
         "%d [hertz]."}}},
    {"chess", "chess", {
        {"squares", 64, "A chessboard has %d squares.",
         "The board comprises %d squares in an [eight-by-eight grid]."},
        {"pieces", 16, "Each player starts with %d pieces.",
         "Each side begins with %d pieces in the [initial position]."},
        {"first move|legal moves", 20,
         "White can choose between %d first moves.",
         "White has %d [legal moves] in the [initial position] of the "
         "game."},
        {"knight", 8, "A knight can reach at most %d other spots.",
         "A knight controls at most %d [target cells] due to its "
         "[L-shaped movement]."},
        {"possible games|shannon", 120,
         "The number of possible games has about %d zeros.",
         "The [Shannon number] estimates the [game-tree complexity] at ten "
         "to the power %d."}}},
    {"football", "football (soccer)", {
        {"players|team", 11, "Each team has %d players at a time.",
         "Each side has %d players including the [goalkeeper]."},
        {"minutes|duration", 90, "A match lasts %d minutes.",
         "[Regulation time] is %d minutes in two halves."},
        {"world cup|tournament", 1930, "The first World Cup was played in "
         "%d.",
         "The inaugural [FIFA] World Cup tournament was held in %d."},
        {"ball|circumference", 70, "The ball is about %d centimeters "
         "around.",
         "A [regulation ball] has a [circumference] of approximately %d "
         "centimeters."},
        {"field|touchline", 105, "A big field is about %d meters long.",
         "A standard [FIFA] pitch has a [touchline] length of %d meters."}}},
    {"elephants", "elephants", {
        {"weigh|mass", 6000, "A grown African elephant weighs about %d "
         "kilograms.",
         "An adult African [bush elephant] has a body mass of approximately "
         "%d kilograms."},
        {"baby|gestation", 22, "Baby elephants grow inside their mother "
         "for about %d months.",
         "Elephant [gestation period] lasts approximately %d months."},
        {"trunk|proboscis", 40000,
         "An elephant's trunk has about %d little muscles.",
         "The [proboscis] contains approximately %d [muscle fascicles]."},
        {"eats|forage", 150, "An elephant eats about %d kilograms of food a "
         "day.",
         "Daily [forage intake] of an adult elephant is approximately %d "
         "kilograms."},
        {"live|lifespan", 70, "Elephants can live about %d years.",
         "Elephant [lifespan] in the wild reaches approximately %d years."}}},
};
const int rlhi__ntopics =
    (int)(sizeof rlhi__topics / sizeof rlhi__topics[0]);

int rlhi_sim_topic_count(void)
{
    return rlhi__ntopics;
}

const char *rlhi_sim_topic_name(int topic)
{
    if (topic < 0 || topic >= rlhi__ntopics)
        return NULL;
    return rlhi__topics[topic].name;
}

int rlhi_sim_topic_find(const char *name)
{
    int i;

    for (i = 0; i < rlhi__ntopics; i++)
        if (!strcmp(rlhi__topics[i].name, name))
            return i;
    return -1;
}

int rlhi_sim_topic_facts(int topic)
{
    (void)topic;
    return RLHI__FACTS_PER_TOPIC;
}

/* ---- small helpers shared by the sim files -------------------------- */

const char *rlhi__pick(const char *const *list, size_t n, struct rlhi_rng *r)
{
    return list[rlhi_rng_below(r, n)];
}

void rlhi__copy(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);

    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

long rlhi__wrong_value(long value, struct rlhi_rng *r)
{
    /* Near misses look like real mistakes: off by a little for small
     * numbers, by a few percent (at least 1) for large ones. */
    long step = value >= 100 ? value / 10 : 1 + (long)rlhi_rng_below(r, 3);
    long w;

    if (step < 1)
        step = 1;
    if (value >= 100)
        step = step / 2 + (long)rlhi_rng_below(r, (uint64_t)step) + 1;
    w = rlhi_rng_below(r, 2) || value - step < 0 ? value + step
                                                 : value - step;
    return w == value ? value + 1 : w;
}

int rlhi__fact_put(struct rlhi_buf *out, const char *s, long value)
{
    int r = 0;

    for (; *s && !r; s++) {
        if (*s == '[' || *s == ']')
            continue;
        if (s[0] == '%' && s[1] == 'd') {
            r = rlhi_buf_addf(out, "%ld", value);
            s++;
            continue;
        }
        r = rlhi_buf_addc(out, *s);
    }
    return r;
}

void rlhi__format(char *out, size_t cap, const char *fmt, const long *ints,
                  int n, const char *str)
{
    size_t o = 0;
    int k = 0;

    if (!cap)
        return;
    for (; *fmt && o + 1 < cap; fmt++) {
        char num[24];
        const char *ins = NULL;

        if (fmt[0] == '%' && fmt[1] == 'd') {
            snprintf(num, sizeof num, "%ld", k < n ? ints[k] : 0L);
            k++;
            ins = num;
        } else if (fmt[0] == '%' && fmt[1] == 's') {
            ins = str ? str : "";
        }
        if (!ins) {
            out[o++] = *fmt;
            continue;
        }
        fmt++;
        while (*ins && o + 1 < cap)
            out[o++] = *ins++;
    }
    out[o] = 0;
}

static bool is_word(int c)
{
    return isalnum(c) || c == '_' || (c & 0x80);
}

/* Counts whole-word occurrences of `phrase` found by `find` (strstr or
 * strcasestr): a match must not continue a word on either side. */
static int count_words(const char *text, const char *phrase,
                       char *(*find)(const char *, const char *))
{
    size_t n = strlen(phrase);
    const char *p = text;
    int count = 0;

    if (!n)
        return 0;
    while ((p = find(p, phrase))) {
        bool start = p == text || !is_word((unsigned char)p[-1]) ||
                     !is_word((unsigned char)phrase[0]);
        bool end = !is_word((unsigned char)p[n]) ||
                   !is_word((unsigned char)phrase[n - 1]);

        if (start && end)
            count++;
        p += n;
    }
    return count;
}

int rlhi__count_phrase(const char *text, const char *phrase)
{
    return count_words(text, phrase, strcasestr);
}

int rlhi__count_lower(const char *lower, const char *phrase)
{
    return count_words(lower, phrase, strstr);
}

/* ---- technical lexicon ---------------------------------------------- */

const char *const rlhi__expert_frames[] = {
    "From a technical standpoint,", "Strictly speaking,", "In precise terms,",
    "Technically,", "In quantitative terms,",
};
const int rlhi__n_expert_frames =
    (int)(sizeof rlhi__expert_frames / sizeof *rlhi__expert_frames);

const char *const rlhi__plain_frames[] = {
    "In simple terms,", "Put simply,", "Think of it this way:",
    "In plain words,", "Here is the simple version:",
};
const int rlhi__n_plain_frames =
    (int)(sizeof rlhi__plain_frames / sizeof *rlhi__plain_frames);

/* Room for every marked term: 20 topics x 5 facts x at most 3 marks, plus
 * the framings and the arithmetic terms. */
#define LEX_MAX 512
static char lex_store[LEX_MAX][48];
static const char *lex[LEX_MAX];
static int nlex;
static pthread_once_t lex_once = PTHREAD_ONCE_INIT;

static void lex_add(const char *s, size_t n)
{
    char term[48];
    size_t i;
    int k;

    /* Framings end in ',' or ':'; the words alone are the marker. */
    while (n && (s[n - 1] == ',' || s[n - 1] == ':'))
        n--;
    if (!n || n >= sizeof term || nlex >= LEX_MAX)
        return;
    for (i = 0; i < n; i++)
        term[i] = (char)tolower((unsigned char)s[i]);
    term[n] = 0;
    for (k = 0; k < nlex; k++)
        if (!strcmp(lex[k], term))
            return;
    memcpy(lex_store[nlex], term, n + 1);
    lex[nlex] = lex_store[nlex];
    nlex++;
}

/* Technical words of the arithmetic answers (see answer.c). */
static const char *const arith_terms[] = {
    "distributive property", "partial products", "evaluates to",
    "the product", "the sum", "the difference", "operator precedence",
    "multiplicand", "summand", "subtrahend", "inverse operation",
};

static void lex_build(void)
{
    int t, f, i;

    for (t = 0; t < rlhi__ntopics; t++)
        for (f = 0; f < RLHI__FACTS_PER_TOPIC; f++) {
            const char *s = rlhi__topics[t].facts[f].tech, *open;

            while ((open = strchr(s, '['))) {
                const char *close = strchr(open, ']');

                if (!close)
                    break;
                lex_add(open + 1, (size_t)(close - open - 1));
                s = close + 1;
            }
        }
    for (i = 0; i < rlhi__n_expert_frames; i++)
        lex_add(rlhi__expert_frames[i], strlen(rlhi__expert_frames[i]));
    for (i = 0; i < (int)(sizeof arith_terms / sizeof *arith_terms); i++)
        lex_add(arith_terms[i], strlen(arith_terms[i]));
}

const char *const *rlhi__tech_lexicon(int *n)
{
    pthread_once(&lex_once, lex_build);
    *n = nlex;
    return lex;
}

/* ---- requests ------------------------------------------------------- */

static const char *const topic_templates[] = {
    "Tell me about %s.", "What do you know about %s?",
    "Can you explain %s to me?", "Give me some facts about %s.",
    "I'm curious about %s. What should I know?",
    "What are the key facts about %s?", "Could you describe %s?",
    "I need information on %s.", "Explain %s.",
    "What's interesting about %s?", "I have a question about %s.",
    "Teach me something about %s.", "Can you give me an overview of %s?",
    "Please tell me about %s.",
};

/* Arithmetic templates, one list per form; %d are a, b, c in order. */
static const char *const form0[] = {
    "What is %d * %d?", "what's %d times %d", "Calculate %d x %d.",
    "Can you multiply %d by %d?", "How much is %d times %d?",
};
static const char *const form1[] = {
    "A baker fills %d trays with %d cookies each. How many cookies is that "
    "in total?",
    "There are %d boxes with %d apples in each box. How many apples are "
    "there?",
    "A school has %d classes of %d students. How many students are there?",
};
static const char *const form2[] = {
    "Sam has %d marbles and buys %d bags with %d marbles each. How many "
    "marbles does Sam have now?",
    "A library owns %d books and receives %d boxes of %d books. How many "
    "books does it own now?",
};
static const char *const form3[] = {
    "A train travels %d km each hour for %d hours and then %d km more. How "
    "far does it go in total?",
    "I save %d dollars a week for %d weeks and then get %d dollars as a "
    "gift. How much do I have?",
};
static const char *const form4[] = {
    "I had %d dollars, spent %d on lunch and %d on a book. How much is "
    "left?",
    "A tank holds %d liters. We pour out %d liters and then %d more. How "
    "many liters remain?",
};

static void arith_sample(struct rlhi_sim_request *q, struct rlhi_rng *r)
{
    const char *fmt;
    long v[3];

    q->form = (int)rlhi_rng_below(r, RLHI__ARITH_FORMS);
    switch (q->form) {
    case 0:
    case 1:
        q->a = 11 + (int)rlhi_rng_below(r, 89);
        q->b = 3 + (int)rlhi_rng_below(r, 23);
        q->c = 0;
        q->answer = (long)q->a * q->b;
        fmt = q->form ? RLHI__PICK(form1, r) : RLHI__PICK(form0, r);
        break;
    case 2:
        q->a = 5 + (int)rlhi_rng_below(r, 95);
        q->b = 2 + (int)rlhi_rng_below(r, 9);
        q->c = 3 + (int)rlhi_rng_below(r, 22);
        q->answer = q->a + (long)q->b * q->c;
        fmt = RLHI__PICK(form2, r);
        break;
    case 3:
        q->a = 12 + (int)rlhi_rng_below(r, 88);
        q->b = 2 + (int)rlhi_rng_below(r, 9);
        q->c = 5 + (int)rlhi_rng_below(r, 95);
        q->answer = (long)q->a * q->b + q->c;
        fmt = RLHI__PICK(form3, r);
        break;
    default:
        q->b = 5 + (int)rlhi_rng_below(r, 60);
        q->c = 5 + (int)rlhi_rng_below(r, 60);
        q->a = q->b + q->c + 1 + (int)rlhi_rng_below(r, 200);
        q->answer = (long)q->a - q->b - q->c;
        fmt = RLHI__PICK(form4, r);
        break;
    }
    v[0] = q->a;
    v[1] = q->b;
    v[2] = q->c;
    rlhi__format(q->text, sizeof q->text, fmt, v, 3, NULL);
}

void rlhi__typos(char *text, size_t cap, struct rlhi_rng *r)
{
    int k, nt = 1 + (int)rlhi_rng_below(r, 2);
    size_t n = strlen(text);

    (void)cap;
    for (k = 0; k < nt && n > 4; k++) {
        size_t i = 1 + rlhi_rng_below(r, n - 2);

        switch (rlhi_rng_below(r, 4)) {
        case 0: /* swap two letters */
            if (isalpha((unsigned char)text[i]) &&
                isalpha((unsigned char)text[i + 1])) {
                char t = text[i];

                text[i] = text[i + 1];
                text[i + 1] = t;
            }
            break;
        case 1: /* drop a letter */
            if (isalpha((unsigned char)text[i])) {
                memmove(text + i, text + i + 1, n - i);
                n--;
            }
            break;
        case 2: /* all lower case, as people type */
            for (i = 0; i < n; i++)
                text[i] = (char)tolower((unsigned char)text[i]);
            break;
        default: /* no final punctuation */
            if (n && strchr(".?!", text[n - 1]))
                text[--n] = 0;
            break;
        }
    }
}

void rlhi_sim_request_sample(struct rlhi_sim_request *q, double typo_rate,
                             struct rlhi_rng *r)
{
    memset(q, 0, sizeof *q);
    /* One request in three is arithmetic: enough tasks with a checkable
     * answer for corrections, while most requests carry style. */
    if (rlhi_rng_below(r, 3) == 0) {
        q->kind = RLHI_SIM_ARITH;
        q->topic = -1;
        arith_sample(q, r);
    } else {
        q->kind = RLHI_SIM_FACTS;
        q->topic = (int)rlhi_rng_below(r, (uint64_t)rlhi__ntopics);
        rlhi__format(q->text, sizeof q->text, RLHI__PICK(topic_templates, r),
                     NULL, 0, rlhi__topics[q->topic].phrase);
    }
    if (rlhi_rng_double(r) < typo_rate)
        rlhi__typos(q->text, sizeof q->text, r);
}

int rlhi_sim_task_json(const struct rlhi_sim_request *q, struct rlhi_buf *out)
{
    if (q->kind == RLHI_SIM_FACTS)
        return rlhi_buf_addf(out, "{\"kind\":\"facts\",\"topic\":\"%s\"}",
                             rlhi__topics[q->topic].name);
    return rlhi_buf_addf(out,
                         "{\"kind\":\"arith\",\"form\":%d,\"a\":%d,"
                         "\"b\":%d,\"c\":%d,\"answer\":%ld}",
                         q->form, q->a, q->b, q->c, q->answer);
}
